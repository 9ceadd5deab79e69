"""One perturbation against a weighted ensemble of surrogate models, optionally under EOT.

The perturbation lives on a *canvas*: pixels [N,3,H,W] in [0,1] at one resolution (what the saved
PNGs hold). Each surrogate sees the canvas through its own differentiable preprocessing
(`surrogate_view`: the adapter's resize/crop, as its real processor would treat the saved image),
so surrogates of different input sizes mix.

Memory: `EnsembleObjective.loss_and_grad` runs each surrogate's (and each EOT sample's) forward
and backward one after another and adds up the gradients on the canvas, so at most one surrogate's
autograd graph is alive at a time: peak activation memory is the largest surrogate's, not the sum
(bench/ensemble_step.py measures it). The weights of every surrogate stay loaded.

The ensemble loss of image n at a step is  sum_s w_s * mean_k L_s(view_s(T_k(x_n)))  over
surrogates s (weights w_s) and EOT transforms T_k (none without EOT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mmsafety.models.base import PixelLoss
from visual_attacks.eot import EOTransforms

Objective = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Surrogate:
    """A crafting model in an ensemble: its display name (records, transfer matrix rows), its weight,
    its adapter, and the case's objective built for it (at its input size)."""

    name: str
    weight: float
    adapter: PixelLoss
    objective: Objective | None = None


def surrogate_view(adapter: PixelLoss, canvas: torch.Tensor) -> torch.Tensor:
    """The canvas [N,3,H,W] in [0,1] as `adapter` takes pixels: at its `input_size`, through the
    resize/crop half of its differentiable preprocessing (normalisation is left to `target_loss`),
    on its device. An adapter without such a half gets a plain antialiased bicubic resize."""
    canvas = canvas.to(adapter.device)
    size = tuple(adapter.input_size)
    if tuple(canvas.shape[-2:]) == size:
        return canvas
    resize_and_crop = getattr(getattr(adapter, "preprocess", None), "resize_and_crop", None)
    view = resize_and_crop(canvas) if resize_and_crop is not None else canvas
    if tuple(view.shape[-2:]) != size:
        view = F.interpolate(view, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return view


class EnsembleObjective:
    """`loss_and_grad(canvas, step) -> (loss [N], grad [N,3,H,W])` (what PGD uses: surrogates one
    after another), `__call__(canvas, step) -> loss [N]` (the same loss in one call, for scoring),
    `validation` (a fixed score for keep-best, or None), `state_dict` (for the attack checkpoint:
    each surrogate objective's sampler and the EOT generator)."""

    def __init__(self, surrogates: Sequence[Surrogate], eot: EOTransforms | None = None):
        self.surrogates, self.eot = list(surrogates), eot
        self.last_step = 0
        validations = [getattr(s.objective, "validation", None) for s in self.surrogates]
        # Step losses are comparable only when every step sees the same prompts and no random transform.
        self._validations = validations if all(v is not None for v in validations) else None
        self.validation = self._validation if (self._validations is not None or eot is not None) else None

    def _transforms(self, step: int) -> list:
        return self.eot.for_step(step) if self.eot is not None else [lambda x: x]

    def _term(self, s: Surrogate, transform, canvas: torch.Tensor, step: int, samples: int) -> torch.Tensor:
        loss = s.objective(surrogate_view(s.adapter, transform(canvas)), step).float()
        return (s.weight / samples) * loss.to(canvas.device)

    def loss_and_grad(self, canvas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.last_step = step
        canvas = canvas.detach().float()
        transforms = self._transforms(step)
        total = torch.zeros(canvas.shape[0], device=canvas.device)
        grad = torch.zeros_like(canvas)
        for s in self.surrogates:
            for transform in transforms:
                leaf = canvas.clone().requires_grad_(True)
                term = self._term(s, transform, leaf, step, len(transforms))
                g, = torch.autograd.grad(term.sum(), leaf)  # frees this surrogate's graph before the next one
                grad += g
                total += term.detach()
        return total, grad

    def __call__(self, canvas: torch.Tensor, step: int) -> torch.Tensor:
        self.last_step = step
        transforms = self._transforms(step)
        return sum(self._term(s, t, canvas, step, len(transforms)) for s in self.surrogates for t in transforms)

    def _validation(self, canvas: torch.Tensor) -> torch.Tensor:
        """Without transforms, on each surrogate's fixed validation batch (or, when its steps all see
        the same prompts, on the last step's)."""
        total = torch.zeros(canvas.shape[0], device=canvas.device)
        for i, s in enumerate(self.surrogates):
            view = surrogate_view(s.adapter, canvas)
            loss = self._validations[i](view) if self._validations is not None else s.objective(view, self.last_step)
            total += s.weight * loss.float().to(canvas.device)
        return total

    def state_dict(self) -> dict:
        return {"surrogates": [s.objective.state_dict() if hasattr(s.objective, "state_dict") else {}
                               for s in self.surrogates],
                "eot": self.eot.state_dict() if self.eot is not None else None}

    def load_state_dict(self, state: dict) -> None:
        for s, saved in zip(self.surrogates, state["surrogates"]):
            if hasattr(s.objective, "load_state_dict"):
                s.objective.load_state_dict(saved)
        if self.eot is not None and state.get("eot") is not None:
            self.eot.load_state_dict(state["eot"])
