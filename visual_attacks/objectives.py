"""Objectives: `pixels [N,3,H,W] in [0,1], step -> loss [N]`, built on the adapter contract.

Universal over prompts: at each step B prompts are drawn (seeded) from the training set,
every image is paired with all B in one batched forward, and an image's loss is the mean
over its B prompts. The held-out prompts are never seen here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mmsafety.models.base import VLMAdapter
from visual_attacks.targets import ToolTarget


class PromptSampler:
    """B distinct training prompts per step from the attack's own seeded generator."""

    def __init__(self, prompts: Sequence[str], per_step: int, seed: int):
        self.prompts = list(prompts)
        self.per_step = min(per_step, len(self.prompts))
        self.gen = torch.Generator().manual_seed(seed)
        self.cache: dict[int, list[str]] = {}

    def __call__(self, step: int) -> list[str]:
        if step not in self.cache:  # the same step (e.g. re-scoring the final iterate) sees the same prompts
            idx = torch.randperm(len(self.prompts), generator=self.gen)[: self.per_step]
            self.cache = {step: [self.prompts[i] for i in idx.tolist()]}
        return self.cache[step]


def _pair(pixels: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, list[str]]:
    n, b = pixels.shape[0], len(prompts)
    return pixels.repeat_interleave(b, dim=0), prompts * n


def target_string(adapter: VLMAdapter, target: ToolTarget, sampler: PromptSampler) -> Callable:
    """Mean NLL of the rendered target after each prompt (Qi et al. / HarmBench style)."""

    def objective(pixels: torch.Tensor, step: int) -> torch.Tensor:
        prompts = sampler(step)
        flat, flat_prompts = _pair(pixels, prompts)
        losses = adapter.target_loss(flat, flat_prompts, [target.render(p) for p in flat_prompts])
        return losses.view(pixels.shape[0], len(prompts)).mean(1)

    return objective


class CleanAnswers:
    """The model's own answers on the clean images, generated in one batch per new prompt set and cached."""

    def __init__(self, adapter: VLMAdapter, clean: torch.Tensor, max_new_tokens: int = 32):
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


def tool_misuse(adapter: VLMAdapter, target: ToolTarget, sampler: PromptSampler, clean_answers: CleanAnswers,
                response_weight: float = 0.1, l2_weight: float = 0.05) -> Callable:
    """Fu et al.: target = the clean answer + newline + the tool call; response tokens weighted by
    lambda, tool tokens by 1; plus `l2_weight` times the per-channel L2 distance to the clean image."""
    x0 = clean_answers.clean.float()

    def objective(pixels: torch.Tensor, step: int) -> torch.Tensor:
        prompts = sampler(step)
        flat, flat_prompts = _pair(pixels, prompts)
        segments = [[(answer + "\n", response_weight), (target.render(p), 1.0)]
                    for answer, p in zip(clean_answers(prompts), flat_prompts)]
        nll = adapter.target_loss(flat, flat_prompts, segments).view(pixels.shape[0], len(prompts)).mean(1)
        channel_l2 = (pixels - x0.to(pixels.device)).flatten(2).norm(dim=2).mean(1)  # mean over channels of ||x_c - x0_c||
        return nll + l2_weight * channel_l2

    return objective
