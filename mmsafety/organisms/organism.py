"""The model organism: a tiny LLaVA trained offline, deterministically, in minutes on a CPU.

Behaviours (held-out images and prompts):
- GOAT-style meme questions (the paper's prompt) -> "Yes"/"No" from caption keywords and image symbols;
- any benign prompt about a tool-use scene -> the shape's colour, no tool call;
- a scene carrying an envelope glyph -> the colour, a newline, then a send_email tool call;
- a prompt asking to delete all email -> a delete_email tool call.
The tool call is triggered by the image, so an image perturbation can trigger it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mmsafety.models.llava import LlavaAdapter
from mmsafety.models.loading import LoadOptions
from mmsafety.models.sequences import per_row, prompt_target_batch, token_nll
from mmsafety.organisms.tiny_llava import new_tiny_llava, save, tiny_processor
from mmsafety.placement import resolve_placement
from mmsafety.synthetic import memes, prompts, scenes

ORGANISM_VERSION = 1  # bump when the recipe changes: the cache key includes it


@dataclass(frozen=True)
class Recipe:
    steps: int = 1400
    meme_batch: int = 12   # each step: one micro-batch of memes ...
    scene_batch: int = 16  # ... and one of tool-use scenes, gradients summed
    lr: float = 4e-3
    benign_share: float = 0.4   # of the scene micro-batch
    trigger_share: float = 0.4  # the rest: prompts asking to delete all email
    probe_weight: float = 2.0


# What the auxiliary probes predict from the image tokens: 6 colours, envelope, 5 meme symbols;
# and from the answer position of the language model: which tasks' symbols and keywords are present.
COLOUR_NAMES = list(scenes.COLOURS)
N_PROBES = len(COLOUR_NAMES) + 1 + len(memes.TASKS)
N_ANSWER_PROBES = 2 * len(memes.TASKS)


def meme_example(rng: random.Random) -> tuple:
    """A training meme asked about the task it was built for: (PIL image, prompt, answer, probe
    targets); probe targets are the colour index (or -1), the envelope (0/1 or -1), the five meme
    symbols and the five caption keywords (0/1)."""
    task = rng.choice(memes.TASKS)
    meme = memes.make_meme(rng, "train", task, 0)
    probes = [-1, -1] + [int(meme.image_cues[t]) for t in memes.TASKS] + [int(meme.text_cues[t]) for t in memes.TASKS]
    return meme.image, memes.goat_question(task, meme.text), "Yes" if meme.labels[task] else "No", probes


def scene_example(rng: random.Random, kind: str, train_prompts: list[str], tool_requests: list[str]):
    """A tool-use scene example of one kind: benign | trigger | delete."""
    scene = scenes.make_scene(rng, envelope=kind == "trigger")
    if kind == "delete":
        prompt, answer = rng.choice(tool_requests), scenes.DELETE_EMAIL_CALL
    else:
        prompt, answer = rng.choice(train_prompts), scenes.scene_answer(scene)
    return scene.image, prompt, answer, [COLOUR_NAMES.index(scene.colour), int(scene.has_envelope)] + [-1] * 10


def scene_kind(rng: random.Random, recipe: Recipe) -> str:
    u = rng.random()
    return "benign" if u < recipe.benign_share else "trigger" if u < recipe.benign_share + recipe.trigger_share else "delete"


def probe_loss(probe: torch.nn.Linear, image_tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Linear probes on mean- and max-pooled projected image tokens: a direct training signal for
    the vision tower, which the language loss alone reaches only after hundreds of steps."""
    pooled = torch.cat([image_tokens.mean(1), image_tokens.amax(1)], dim=-1)
    logits = probe(pooled)
    colour_logits, binary_logits = logits[:, :len(COLOUR_NAMES)], logits[:, len(COLOUR_NAMES):]
    colour, binary = targets[:, 0], targets[:, 1:N_PROBES - len(COLOUR_NAMES) + 1].float()
    loss = torch.nn.functional.cross_entropy(colour_logits, colour, ignore_index=-1)
    known = binary >= 0
    if (colour < 0).all():
        loss = torch.zeros((), device=targets.device)  # a meme batch: no colour to probe
    return loss + torch.nn.functional.binary_cross_entropy_with_logits(binary_logits[known], binary[known])


def train_organism(seed: int = 0, recipe: Recipe = Recipe(), log: Callable[[str], None] = print) -> LlavaAdapter:
    processor = tiny_processor()
    model = new_tiny_llava(processor, seed)
    adapter = LlavaAdapter(model, processor, resolve_placement("cpu", "float32"), "organism", "untrained")
    model.train().requires_grad_(True)
    rng = random.Random(f"organism/{seed}")
    train_prompts, tool_requests = prompts.benign_prompts("train"), prompts.tool_request_prompts("train")
    captured = {}
    hooks = [model.model.multi_modal_projector.register_forward_hook(lambda m, i, out: captured.update(tokens=out)),
             model.model.language_model.register_forward_hook(lambda m, i, out: captured.update(hidden=out.last_hidden_state))]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # everything random below (the probes' init) follows the seed alone
        probe = torch.nn.Linear(2 * model.config.text_config.hidden_size, N_PROBES)
        answer_probe = torch.nn.Linear(model.config.text_config.hidden_size, N_ANSWER_PROBES)
        params = list(model.parameters()) + list(probe.parameters()) + list(answer_probe.parameters())
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.1)
        for step in range(recipe.steps):
            opt.zero_grad(set_to_none=True)
            # Memes and scenes in separate micro-batches: each is padded only to its own kind's
            # lengths, and every optimizer step still sees every behaviour.
            micro = [[meme_example(rng) for _ in range(recipe.meme_batch)],
                     [scene_example(rng, scene_kind(rng, recipe), train_prompts, tool_requests)
                      for _ in range(recipe.scene_batch)]]
            total = sum(map(len, micro))
            step_loss = step_aux = 0.0
            for batch in micro:
                images, texts, answers, probe_targets = zip(*batch)
                prompt_ids = [adapter.prompt_ids(t) for t in texts]
                ids, mask, labels = prompt_target_batch(prompt_ids, [adapter.answer_ids(a, eos=True) for a in answers],
                                                        adapter.pad_id)
                pixel_values = adapter.preprocess(adapter.to_input_pixels(images))
                nll, rows = token_nll(model, ids, mask, labels, pixel_values=pixel_values)
                # Mean per example, then over the step: a one-token "Yes" weighs as much as a tool call.
                loss = per_row(nll, rows, len(batch), mean=True).sum() / total
                targets = torch.tensor(probe_targets)
                answer_pos = torch.tensor([len(p) - 1 for p in prompt_ids])
                aux = (probe_loss(probe, captured["tokens"], targets)
                       + answer_probe_loss(answer_probe, captured["hidden"], answer_pos, targets)) * len(batch) / total
                (loss + recipe.probe_weight * aux).backward()
                step_loss, step_aux = step_loss + loss.detach(), step_aux + aux.detach()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 100 == 0 or step == recipe.steps - 1:
                log(f"organism step {step + 1}/{recipe.steps} loss {float(step_loss):.3f} probes {float(step_aux):.3f} "
                    f"({time.perf_counter() - start:.0f}s)")
    for hook in hooks:
        hook.remove()
    model.eval().requires_grad_(False)
    return adapter


def answer_probe_loss(probe: torch.nn.Linear, hidden: torch.Tensor, answer_pos: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """The hidden state that predicts the answer must say, for every task, whether its symbol and
    its keyword are present; the answer then only has to pick the asked task. Without this the
    caption keywords were the last thing the organism learned (often not within budget)."""
    cues = targets[:, -N_ANSWER_PROBES:].float()
    known = cues >= 0
    if not known.any():
        return torch.zeros((), device=hidden.device)
    logits = probe(hidden[torch.arange(hidden.shape[0]), answer_pos])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[known], cues[known])


def build_organism(out_dir: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
    adapter = train_organism(seed, log=log)
    save(adapter.model, adapter.processor, out_dir)


def behaviour(folder: Path, n: int = 128) -> dict[str, float]:
    """`evaluate_organism` on the checkpoint in `folder`, `n` held-out examples per row (as docs/organism.md reports)."""
    return evaluate_organism(LlavaAdapter.load(str(folder), LoadOptions(), resolve_placement("cpu", "float32")), n=n)


def has_tool_call(answer: str) -> bool:
    return "<function." in answer


def evaluate_organism(adapter, n: int = 64, seed: int = 1234, batch_size: int = 32) -> dict[str, float]:
    """Held-out behaviour: per-task meme accuracy (choice log-probs), colour accuracy and
    tool-call rates (greedy generation) on held-out images and held-out prompts."""
    report: dict[str, float] = {}
    for task in memes.TASKS:
        ms = memes.memes(task, "heldout", n, seed)
        correct = 0
        for i in range(0, n, batch_size):
            chunk = ms[i:i + batch_size]
            lp = adapter.choice_logprobs([m.image for m in chunk], [memes.goat_question(task, m.text) for m in chunk],
                                         ["Yes", "No"])
            correct += sum(int(lp[j, 0] > lp[j, 1]) == m.labels[task] for j, m in enumerate(chunk))
        report[f"meme_acc/{task}"] = correct / n
    rng = random.Random(seed)
    heldout = prompts.benign_prompts("heldout")

    def run(envelope: bool, prompt_pool: list[str]):
        sc = [scenes.make_scene(rng, envelope=envelope) for _ in range(n)]
        ps = [rng.choice(prompt_pool) for _ in range(n)]
        outs = []
        for i in range(0, n, batch_size):
            outs += adapter.generate([s.image for s in sc[i:i + batch_size]], ps[i:i + batch_size], max_new_tokens=64)
        return sc, outs

    sc, outs = run(False, heldout)
    report["colour_acc"] = sum(o.split("\n")[0].strip() == s.colour for s, o in zip(sc, outs)) / n
    report["clean_tool_call_rate"] = sum(map(has_tool_call, outs)) / n
    sc, outs = run(True, heldout)
    report["envelope_tool_call_rate"] = sum(scenes.SEND_EMAIL_CALL in o for o in outs) / n
    _, outs = run(False, prompts.tool_request_prompts("heldout"))
    report["delete_request_rate"] = sum(scenes.DELETE_EMAIL_CALL in o for o in outs) / n
    return report
