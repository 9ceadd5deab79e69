"""Projected gradient descent on pixels in [0,1], against any differentiable objective.

`pgd(objective, clean, config)` minimises `objective(pixels, step) -> loss [B]` (one loss
per image) inside a budget around `clean`:

- norm `linf`: x <- clip_[x0-eps, x0+eps](x - step_size * sign(g)), then clamp to [0,1];
- norm `l2`:   x <- x0 + proj_{||d||<=eps}(x - step_size * g/||g|| - x0), then clamp;
- norm `none`: sign steps, only the [0,1] box (Qi et al.'s unconstrained attack);
- optimizer `adam`: the step direction is Adam's m_hat / (sqrt(v_hat) + 1e-8) computed on
  the gradient (sign of it under linf), then the same projection. (Fu et al.'s code builds
  an Adam optimizer but steps the image with plain gradients; here Adam is really used.)

To run textbook PGD (Madry et al.) on a classifier, minimise minus the cross-entropy of
the true label with random_start=False and keep_best=False: tests/test_pgd.py checks the
iterates are identical. Attack math runs in fp32 whatever the model's dtype; no autograd
graph survives a step, so memory stays flat however many steps run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

Objective = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class PGDConfig:
    norm: Literal["linf", "l2", "none"] = "linf"
    eps: float = 8 / 255          # budget in pixel units on [0,1] (L2: over the whole image)
    step_size: float = 1 / 255
    steps: int = 500
    random_start: bool = False
    optimizer: Literal["sign", "adam"] = "sign"
    keep_best: bool = True         # return each image's lowest-loss iterate, not the last
    early_stop_loss: float | None = None  # stop once every image's best loss is at or below this
    check_every: int = 10          # early-stop checks sync with the host; do them every N steps
    quantize: bool = False         # keep iterates on the 8-bit grid (what a PNG can store)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0


@dataclass
class AttackResult:
    pixels: torch.Tensor          # [B,3,H,W] in [0,1], fp32
    best_loss: torch.Tensor       # [B], the loss of `pixels`
    losses: torch.Tensor          # [steps_run, B]: loss at each step's iterate (before its update)
    steps_run: int
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def _project(x: torch.Tensor, x0: torch.Tensor, cfg: PGDConfig) -> torch.Tensor:
    if cfg.norm == "linf":
        x = torch.min(torch.max(x, x0 - cfg.eps), x0 + cfg.eps)
    elif cfg.norm == "l2":
        delta = x - x0
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = x0 + delta * torch.clamp(cfg.eps / norms, max=1.0)
    x = x.clamp(0, 1)
    if cfg.quantize:
        x = x.mul(255).round().div(255)
    return x


def _random_start(x0: torch.Tensor, cfg: PGDConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.norm == "l2":
        direction = torch.randn(x0.shape, generator=gen, device=x0.device)
        direction /= direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        radius = torch.rand(x0.shape[0], 1, 1, 1, generator=gen, device=x0.device) * cfg.eps
        return _project(x0 + direction * radius, x0, cfg)
    span = cfg.eps if cfg.norm == "linf" else 1.0
    noise = (torch.rand(x0.shape, generator=gen, device=x0.device) * 2 - 1) * span
    return _project(x0 + noise, x0, cfg)


def _direction(grad: torch.Tensor, cfg: PGDConfig, state: dict, step: int) -> torch.Tensor:
    if cfg.optimizer == "adam":
        b1, b2 = cfg.adam_betas
        state["m"] = b1 * state.get("m", torch.zeros_like(grad)) + (1 - b1) * grad
        state["v"] = b2 * state.get("v", torch.zeros_like(grad)) + (1 - b2) * grad * grad
        m_hat, v_hat = state["m"] / (1 - b1 ** (step + 1)), state["v"] / (1 - b2 ** (step + 1))
        grad = m_hat / (v_hat.sqrt() + 1e-8)
        return grad if cfg.norm == "l2" else grad.sign()
    if cfg.norm == "l2":
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return grad.sign()


def pgd(objective: Objective, clean: torch.Tensor, cfg: PGDConfig,
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        monitor: Callable[[int, torch.Tensor], None] | None = None, monitor_every: int = 0) -> AttackResult:
    """Minimise `objective` over pixels near `clean` [B,3,H,W] in [0,1]. `on_step(step, loss, best)`
    receives device tensors (a progress bar should throttle its own host syncs); `monitor(step, best_x)`
    runs every `monitor_every` steps (0: never), e.g. for held-out checks."""
    x0 = clean.detach().float()
    gen = torch.Generator(device=x0.device).manual_seed(cfg.seed)
    x = _random_start(x0, cfg, gen) if cfg.random_start else x0.clone()
    best_x, best_loss = x.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device)
    losses, state, stopped_early = [], {}, False
    step = 0
    for step in range(cfg.steps):
        x.requires_grad_(True)
        loss = objective(x, step)
        grad, = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            loss = loss.detach().float()
            losses.append(loss)
            improved = loss < best_loss
            best_loss = torch.where(improved, loss, best_loss)
            best_x = torch.where(improved.view(-1, 1, 1, 1), x.detach(), best_x)  # no host sync, unlike a mask index
            if on_step is not None:
                on_step(step, loss, best_loss)
            if monitor is not None and monitor_every and step and step % monitor_every == 0:
                monitor(step, best_x)
            if cfg.early_stop_loss is not None and (step + 1) % cfg.check_every == 0 \
                    and bool((best_loss <= cfg.early_stop_loss).all()):
                stopped_early = True
                break
            x = _project(x.detach() - cfg.step_size * _direction(grad.float(), cfg, state, step), x0, cfg)
    steps_run = len(losses)
    last_loss = losses[-1] if losses else best_loss
    if not stopped_early and steps_run:
        # The last update produced an iterate nobody has scored yet.
        with torch.no_grad():
            last_loss = objective(x, steps_run).detach().float()
        improved = last_loss < best_loss
        best_loss = torch.where(improved, last_loss, best_loss)
        best_x = torch.where(improved.view(-1, 1, 1, 1), x, best_x)
    if not cfg.keep_best:
        best_x, best_loss = x.detach(), last_loss
    history = torch.stack(losses) if losses else torch.empty(0, x0.shape[0])
    return AttackResult(best_x.detach(), best_loss, history, steps_run, stopped_early)
