"""APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020), as `attack.optimizer=apgd`.

Read from their code (fra31/auto-attack, `autoattack/autopgd_base.py`, `APGDAttack.attack_single_run`)
and RobustVLM's targeted copy (chs20/RobustVLM, `vlm_eval/attacks/apgd.py`), written anew here to
minimise any objective of visual_attacks.pgd (target string, tool call, verdict flip, CLIP embedding):

- steps: the first forward+backward scores the start point; each later one follows one update,
  so `steps` counts forward+backward passes as every optimizer does (their n_iter = steps - 1);
- update: z = P(x - eta * sign(g)) (L-inf; g/||g||_2 under L2), then the momentum step
  x' = P(x + a (z - x) + (1 - a)(x - x_prev)) with a = 0.75 (1 on the first update);
- step size: eta starts at `apgd_alpha` * eps (their alpha 2; RobustVLM's targeted LLaVA runs use 1);
  checkpoints after 0.22 * n_iter updates, the window then shrinking by 0.03 * n_iter down to
  0.06 * n_iter; at a checkpoint an image's eta halves when fewer than rho = 0.75 of the window's
  updates lowered its loss, or when its step was not halved at the previous checkpoint and its best
  loss has not improved since; a halved image restarts from its best point and that point's gradient;
- the result is each image's best point (APGD keeps it by construction; `keep_best` is not read).

Deliberate departures, all in visual_attacks/pgd.py's terms:
- Their oscillation count compares the first update's loss with a zero-initialised row (the loss
  history has no entry for the start point), which counts it as an improvement or not depending on
  the loss's sign; here it is compared with the start point's loss, as the paper's condition reads.
  tests/test_apgd.py checks equality with torchattacks' APGD on runs where the two agree.
- Universal attacks (a new prompt batch every step): every rule above compares losses, and losses on
  different random batches are not comparable (an oscillating count of ~50% "improvements" would
  halve the step at every checkpoint). With a `select` scorer (the fixed validation batch of training
  prompts) the rule and the best point use `select`'s score of every iterate: one extra forward per
  step (no backward), not counted in `steps`. Without one (a deterministic objective) the step's own
  loss is used, as in their code.
- Random start (`random_start`): theirs (x0 + eps * t / ||t||, t uniform in [-1,1] under L-inf,
  Gaussian under L2); off by default, as in RobustVLM. Restarts (their n_restarts): `attack.restarts`,
  run by visual_attacks.pgd.pgd_restarts from random starts, the passes shared out between them.
- norm `none` is the [0,1] box (eps 1); `quantize` keeps iterates on the 8-bit grid.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from mmsafety.preemption import SaveOnSignal
from visual_attacks.pgd import OPTIMIZERS, AttackResult, Checkpoint, EarlyStop, Objective, PGDConfig, Select


def schedule(steps: int) -> tuple[int, int, int]:
    """(first window, smallest window, shrink per checkpoint) for `steps` forward+backward passes."""
    n_iter = max(steps - 1, 0)
    return max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)


def _l2(v: torch.Tensor) -> torch.Tensor:
    return (v ** 2).flatten(1).sum(-1).sqrt().view(-1, *[1] * (v.dim() - 1))


def project(x: torch.Tensor, x0: torch.Tensor, cfg: PGDConfig) -> torch.Tensor:
    """Their projection: L-inf clip then [0,1]; L2 rescaled onto the ball then [0,1]."""
    if cfg.norm == "linf":
        x = torch.clamp(torch.min(torch.max(x, x0 - cfg.eps), x0 + cfg.eps), 0.0, 1.0)
    elif cfg.norm == "l2":
        d = x - x0
        x = torch.clamp(x0 + d / (_l2(d) + 1e-12) * torch.min(cfg.eps * torch.ones_like(x0), _l2(d)), 0.0, 1.0)
    else:
        x = x.clamp(0.0, 1.0)
    if cfg.quantize:
        x = x.mul(255).round().div(255)
    return x


def direction(grad: torch.Tensor, cfg: PGDConfig) -> torch.Tensor:
    if cfg.norm == "l2":
        return grad / (_l2(grad) + 1e-12)
    return grad.sign()


def random_start(x0: torch.Tensor, cfg: PGDConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.norm == "l2":
        t = torch.randn(x0.shape, generator=gen, device=x0.device)
        return (x0 + cfg.eps * t / (_l2(t) + 1e-12)).clamp(0.0, 1.0)
    t = 2 * torch.rand(x0.shape, generator=gen, device=x0.device) - 1
    top = t.abs().flatten(1).max(1)[0].view(-1, *[1] * (x0.dim() - 1))
    eps = cfg.eps if cfg.norm == "linf" else 1.0
    return (x0 + eps * t / (top + 1e-12)).clamp(0.0, 1.0)


@OPTIMIZERS.register("apgd")
def apgd_direction(grad: torch.Tensor, cfg: PGDConfig, state: dict, step: int) -> torch.Tensor:
    """Only the registry's name for APGD: pgd() runs `attack_loop` (below) instead of a direction."""
    raise RuntimeError("optimizer=apgd runs its own loop (visual_attacks.apgd.apgd), not a PGD direction")


def apgd(objective: Objective, clean: torch.Tensor, cfg: PGDConfig,
         on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
         monitor: Callable[[int, torch.Tensor], None] | None = None, monitor_every: int = 0,
         select: Select | None = None, checkpoint: Checkpoint | None = None,
         succeeded: Callable[[torch.Tensor], torch.Tensor] | None = None) -> AttackResult:
    """Minimise `objective` with APGD; the same arguments and result as visual_attacks.pgd.pgd."""
    x0 = clean.detach().float()
    n, dev = x0.shape[0], x0.device
    eps = cfg.eps if cfg.norm in ("linf", "l2") else 1.0
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    first_window, min_window, shrink = schedule(cfg.steps)
    stop = EarlyStop(cfg, n, dev, succeeded)
    s = {  # everything the next pass depends on (saved by the checkpoint)
        "x": random_start(x0, cfg, gen) if cfg.random_start else x0.clone(),
        "step_size": torch.full((n, *[1] * (x0.dim() - 1)), cfg.apgd_alpha * eps, device=dev),
        "window": first_window, "counter": 0, "reduced_last": torch.ones(n, dtype=torch.bool, device=dev),
        "scores": [], "losses": [], "step": 0,
    }
    saved = checkpoint.load(dev) if checkpoint is not None else None
    if saved is not None:
        s = saved["apgd"]
        stop.load(saved.get("early_stop"))

    def evaluate(x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(objective, "loss_and_grad"):
            loss, grad = objective.loss_and_grad(x, step)
        else:
            x = x.clone().requires_grad_(True)
            loss = objective(x, step)
            grad, = torch.autograd.grad(loss.sum(), x)
        return loss.detach().float(), grad.detach().float()

    def save(step: int) -> None:
        checkpoint.save({"apgd": {**s, "step": step}, "early_stop": stop.state(), "step": step})

    stopped_early = False
    with SaveOnSignal() if checkpoint is not None else contextlib.nullcontext() as held:
        for step in range(s["step"], cfg.steps):
            if held is not None and held.pending:
                save(step)
                held.release()
            if checkpoint is not None and checkpoint.every and step > saved_step(saved) and step % checkpoint.every == 0:
                save(step)
            with torch.no_grad():
                if step > 0:  # one update with the last gradient, then the momentum step
                    x = s["x"]
                    moved = x - s["x_old"]
                    s["x_old"] = x.clone()
                    a = 0.75 if step > 1 else 1.0
                    z = project(x - s["step_size"] * direction(s["grad"], cfg), x0, cfg)
                    z = project(x + (z - x) * a + moved * (1 - a), x0, cfg)
                    s["x"] = stop.freeze(z, x)
            loss, grad = evaluate(s["x"], step)
            with torch.no_grad():
                score = loss if select is None else select(s["x"]).detach().float()
                s["losses"].append(stop.history(loss))
                s["scores"].append(score)
                stop.ran()
                if step == 0:
                    s.update(x_old=s["x"].clone(), grad=grad, x_best=s["x"].clone(), grad_best=grad.clone(),
                             best=score.clone(), best_last=score.clone())
                else:
                    s["grad"] = grad
                    better = score < s["best"]
                    s["best"] = torch.where(better, score, s["best"])
                    s["x_best"] = torch.where(better.view(-1, 1, 1, 1), s["x"], s["x_best"])
                    s["grad_best"] = torch.where(better.view(-1, 1, 1, 1), grad, s["grad_best"])
                    s["counter"] += 1
                    if s["counter"] == s["window"]:
                        _checkpoint_rule(s, cfg, stop.active, min_window, shrink)
                if on_step is not None:
                    on_step(step, loss, s["best"])
                if monitor is not None and monitor_every and step and step % monitor_every == 0:
                    monitor(step, s["x_best"])
                if stop.check(step, s["best"], s["x_best"]):
                    stopped_early = True
                    break
    steps_run = len(s["losses"])
    history = torch.stack(s["losses"]) if s["losses"] else torch.empty(0, n)
    if not steps_run:
        return AttackResult(s["x"].detach(), torch.full((n,), float("inf"), device=dev), history, 0)
    return AttackResult(s["x_best"].detach(), s["best"], history, steps_run, stopped_early,
                        extra={"step_size": s["step_size"].flatten().cpu()},
                        image_steps=stop.image_steps.cpu() if stop.enabled else None,
                        stopped=~stop.active if stop.enabled else None)


def saved_step(saved: dict | None) -> int:
    return saved["step"] if saved is not None else 0


def _checkpoint_rule(s: dict, cfg: PGDConfig, active: torch.Tensor, min_window: int, shrink: int) -> None:
    """At a checkpoint: halve the step of the images that oscillate or stall, and restart them from
    their best point with its gradient; then shrink the window."""
    k = s["window"]
    scores = torch.stack(s["scores"][-(k + 1):])  # the window's k updates and the score before them
    improved = (scores[1:] < scores[:-1]).float().sum(0)
    oscillating = improved <= k * cfg.apgd_rho
    stalled = ~s["reduced_last"] & (s["best_last"] <= s["best"])
    halve = (oscillating | stalled) & active
    s["reduced_last"] = oscillating | stalled
    s["best_last"] = s["best"].clone()
    view = halve.view(-1, *[1] * (s["x"].dim() - 1))
    s["step_size"] = torch.where(view, s["step_size"] / 2.0, s["step_size"])
    s["x"] = torch.where(view, s["x_best"], s["x"])
    s["grad"] = torch.where(view, s["grad_best"], s["grad"])
    s["counter"] = 0
    s["window"] = max(k - shrink, min_window)


apgd_direction.attack_loop = apgd
