"""Objectives: `pixels [N,3,H,W] in [0,1], step -> loss [N]`, built on the adapter contract.

Universal over prompts (or target sentences): at each step B items are drawn (seeded) from the
training set, every image is paired with all B in one batched forward, and an image's loss is
the mean over its B items. The held-out prompts are never seen here. A universal objective also
has `validation(pixels) -> loss [N]` on one fixed batch of training items, which keep-best uses
to compare iterates (step losses on different random batches are not comparable); it is None
when every step sees the same items.
"""

from __future__ import annotations

from pathlib import Path
import random
from typing import Callable, Sequence

import torch

from mmsafety.errors import ConfigError
from mmsafety.models.base import VLMAdapter
from mmsafety.models.sequences import TokenWeightedTarget
from visual_attacks.targets import ToolTarget

VALIDATION_ITEMS = 8  # size of the fixed validation batch that keep-best scores iterates on


class PromptSampler:
    """B distinct training items per step from the attack's own seeded generator, and one fixed
    validation batch of training items drawn from a generator of its own."""

    def __init__(self, prompts: Sequence[str], per_step: int, seed: int, validation_size: int = VALIDATION_ITEMS):
        self.prompts = list(prompts)
        self.per_step = min(per_step, len(self.prompts))
        self.gen = torch.Generator().manual_seed(seed)
        self.cache: dict[int, list[str]] = {}
        self.validation = random.Random(f"validation/{seed}").sample(self.prompts, min(validation_size, len(self.prompts)))

    @property
    def universal(self) -> bool:
        """Whether steps see different items (then step losses are not comparable)."""
        return self.per_step < len(self.prompts)

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state(), "cache": dict(self.cache)}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        self.cache = dict(state["cache"])

    def __call__(self, step: int) -> list[str]:
        if step not in self.cache:  # the same step (e.g. re-scoring the final iterate) sees the same prompts
            idx = torch.randperm(len(self.prompts), generator=self.gen)[: self.per_step]
            self.cache = {step: [self.prompts[i] for i in idx.tolist()]}
        return self.cache[step]


class MixedPromptSampler(PromptSampler):
    """Fu et al.'s prompt mix (`get_one` in `train_adversarial_image.py`): each item first picks a
    prompt set by weight (theirs: image-related questions when `random.random() <= 0.15`, else an
    image-unrelated instruction), then a prompt of that set uniformly. Draws are independent (an
    item may repeat within a step); seeded from the attack's seed. The validation batch is drawn
    the same way from a generator of its own."""

    def __init__(self, sets: dict[str, Sequence[str]], weights: dict[str, float], per_step: int, seed: int,
                 validation_size: int = VALIDATION_ITEMS):
        self.names = [name for name in weights if weights[name] > 0]
        total = sum(weights[name] for name in self.names)
        self.sets = {name: list(sets[name]) for name in self.names}
        self.cumulative = torch.tensor([weights[name] for name in self.names], dtype=torch.float64).cumsum(0) / total
        self.prompts = [p for name in self.names for p in self.sets[name]]
        self.per_step = per_step
        self.gen = torch.Generator().manual_seed(seed)
        self.cache = {}
        self.validation = self._draw(validation_size, torch.Generator().manual_seed(seed + 1_000_003))

    @property
    def universal(self) -> bool:
        return True

    def _draw(self, n: int, gen: torch.Generator) -> list[str]:
        out = []
        for u in torch.rand(n, generator=gen, dtype=torch.float64).tolist():
            # The first set whose cumulative weight reaches u: theirs is `random.random() <= 0.15`.
            k = min(int((self.cumulative < u).sum()), len(self.names) - 1)
            chosen = self.sets[self.names[k]]
            out.append(chosen[int(torch.randint(len(chosen), (1,), generator=gen))])
        return out

    def __call__(self, step: int) -> list[str]:
        if step not in self.cache:
            self.cache = {step: self._draw(self.per_step, self.gen)}
        return self.cache[step]


class SampledObjective:
    """`loss_on(pixels, items) -> [N]` over the sampler's items of each step; `validation` on its fixed batch."""

    def __init__(self, loss_on: Callable[[torch.Tensor, list[str]], torch.Tensor], sampler: PromptSampler):
        self.loss_on, self.sampler = loss_on, sampler
        self.validation = self._validation if sampler.universal else None

    def __call__(self, pixels: torch.Tensor, step: int) -> torch.Tensor:
        return self.loss_on(pixels, self.sampler(step))

    def state_dict(self) -> dict:
        """What a resumed attack needs to draw the same items from here on (the sampler's RNG)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def _validation(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.loss_on(pixels, self.sampler.validation)


def _pair(pixels: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, list[str]]:
    n, b = pixels.shape[0], len(prompts)
    return pixels.repeat_interleave(b, dim=0), prompts * n


def target_string(adapter: VLMAdapter, target: ToolTarget, sampler: PromptSampler) -> SampledObjective:
    """Mean NLL of the rendered target after each prompt (HarmBench style; Qi et al. with one sentence)."""

    def loss_on(pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        flat, flat_prompts = _pair(pixels, prompts)
        losses = adapter.target_loss(flat, flat_prompts, [target.render(p) for p in flat_prompts])
        return losses.view(pixels.shape[0], len(prompts)).mean(1)

    return SampledObjective(loss_on, sampler)


def read_corpus(path: str) -> list[str]:
    """Target sentences, one a row (blank rows skipped), as Qi et al.'s harmful corpus file."""
    try:
        rows = [line.strip() for line in Path(path).expanduser().read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise ConfigError(f"attack.objective.corpus={path}: cannot read it ({e.strerror}); give a text file, "
                          f"one target sentence a row") from None
    rows = [r for r in rows if r]
    if not rows:
        raise ConfigError(f"attack.objective.corpus={path}: no sentences in it; give one target sentence a row")
    return rows


def pooled_token_mean(per_sentence: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """[N, B] mean token NLL per sentence -> [N]: the mean over all the batch's target tokens, as a
    causal LM's `outputs.loss` with padded labels (Qi et al.'s `attack_loss`): sentence k weighs by its
    token count, not 1/B (a long sentence counts more than a short one)."""
    weights = torch.tensor(tokens, dtype=per_sentence.dtype, device=per_sentence.device)
    return (per_sentence * weights).sum(1) / weights.sum().clamp_min(1)


def target_corpus(adapter: VLMAdapter, prompt: str, corpus: PromptSampler) -> SampledObjective:
    """Qi et al. (`visual_attacker.py`): each step, B target sentences drawn from a corpus, all under
    one prompt; an image's loss is their `outputs.loss`, the token NLL averaged over all B sentences'
    tokens together (`pooled_token_mean`). `corpus` samples sentences. An adapter that cannot count
    a sentence's tokens (no `answer_ids`) weighs every sentence alike."""
    count = getattr(adapter, "answer_ids", None)

    def loss_on(pixels: torch.Tensor, sentences: list[str]) -> torch.Tensor:
        n, b = pixels.shape[0], len(sentences)
        losses = adapter.target_loss(pixels.repeat_interleave(b, dim=0), [prompt] * (n * b), sentences * n)
        tokens = [len(count(s)) for s in sentences] if count is not None else [1] * b
        return pooled_token_mean(losses.view(n, b), tokens)

    return SampledObjective(loss_on, corpus)


class CleanAnswers:
    """The model's own answers on the clean images, up to `max_new_tokens` (Fu et al.: 128), generated
    in one batch per new prompt set and cached."""

    def __init__(self, adapter: VLMAdapter, clean: torch.Tensor, max_new_tokens: int = 128):
        self.adapter, self.clean, self.max_new_tokens = adapter, clean.detach(), max_new_tokens
        self.answers: dict[tuple[int, str], str] = {}

    def __call__(self, prompts: list[str]) -> list[str]:
        """Answers for every (image, prompt) pair, images major: [i0p0, i0p1, ..., i1p0, ...]."""
        pairs = [(i, p) for i in range(self.clean.shape[0]) for p in prompts]
        missing = [pair for pair in pairs if pair not in self.answers]
        if missing:
            images = self.clean[[i for i, _ in missing]].to(self.adapter.device)
            outs = self.adapter.generate(images, [p for _, p in missing], max_new_tokens=self.max_new_tokens)
            self.answers.update(zip(missing, outs))
        return [self.answers[pair] for pair in pairs]


def channel_l2_sum(pixels: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Fu et al.'s `l2_reg`: the sum over the 3 channels of each channel's L2 distance to the clean image, [N]."""
    return (pixels - clean).flatten(2).norm(dim=2).sum(1)


def tool_misuse_target(answer: str, call: str, response_weight: float) -> TokenWeightedTarget:
    """Fu et al.'s target (`train_adversarial_image.py` with `data/attacks/Attack.py`): the clean answer,
    then "\\n" + call + EOS; loss (lambda * sum CE(answer) + sum CE(call)) / (N_answer + N_call)."""
    return TokenWeightedTarget(((answer, response_weight), ("\n" + call, 1.0)), eos=True)


def tool_misuse(adapter: VLMAdapter, target: ToolTarget, sampler: PromptSampler, clean_answers: CleanAnswers,
                response_weight: float = 0.1, l2_weight: float = 0.05) -> SampledObjective:
    """Fu et al.'s loss: `tool_misuse_target` per prompt, mean over the step's prompts, plus
    `l2_weight` times `channel_l2_sum` to the clean image (their soft stealth penalty)."""
    x0 = clean_answers.clean.float()

    def loss_on(pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        flat, flat_prompts = _pair(pixels, prompts)
        targets = [tool_misuse_target(answer, target.render(p), response_weight)
                   for answer, p in zip(clean_answers(prompts), flat_prompts)]
        nll = adapter.target_loss(flat, flat_prompts, targets).view(pixels.shape[0], len(prompts)).mean(1)
        return nll + l2_weight * channel_l2_sum(pixels, x0.to(pixels.device))

    return SampledObjective(loss_on, sampler)
