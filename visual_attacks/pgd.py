"""Projected gradient descent on pixels in [0,1], against any differentiable objective.

`pgd(objective, clean, config)` minimises `objective(pixels, step) -> loss [B]` (one loss
per image) inside a budget around `clean`. An objective that also has
`loss_and_grad(pixels, step) -> (loss [B], grad)` takes its own gradient (visual_attacks.ensemble:
one surrogate's backward after another, so their graphs are never alive together). Each step moves the image by `step_size` times a
direction from the gradient (`OPTIMIZERS`, set by `attack.optimizer`), then projects:

- norm `linf`: clip to [x0-eps, x0+eps], then clamp to [0,1];
- norm `l2`:   scale the perturbation back onto the L2 ball of radius eps, then clamp;
- norm `none`: only the [0,1] box (Qi et al.'s unconstrained attack; Fu et al.'s attack).

Optimizers (the direction the image moves along, before the step size):
- `sign`: sign(g) under linf/none, g/||g|| under l2 (Madry et al.; Qi et al.'s `visual_attacker.py`
  and HarmBench's `multimodalpgd` use the sign);
- `sgd`: the raw gradient g, no sign or normalisation. Fu et al.'s `train_adversarial_image.py`
  builds an Adam step and then overwrites it with `grad * step_size`, so this is their update;
- `adam`: Adam's bias-corrected m_hat / (sqrt(v_hat) + 1e-8) (betas `adam_betas`), signed under
  linf/none and used as is under l2. An mmsafety option: no reference attack uses it.

Random start (`random_start`): x0 + U[-eps, eps] under linf (Qi et al.'s constrained attack),
uniform noise U[0,1] under `none` (their unconstrained attack starts from noise, not from the
clean image), a uniform draw in the eps-ball under l2.

Which iterate comes back (`keep_best`): False returns the last iterate (Qi et al., Fu et al.).
True returns each image's lowest-loss iterate: scored by the step's own loss when the objective
is deterministic (HarmBench: one fixed prompt), or by `select(pixels) -> loss [B]` when one is
given, every `select_every` steps and on the last iterate. A universal attack draws different
prompts each step, so its step losses are not comparable; it passes a `select` that scores a
fixed validation batch of training prompts.

Early stop (`early_stop_loss`, `succeeded`), per image: every `check_every` steps an image whose
loss has stayed below `early_stop_loss` for `early_stop_window` checks in a row (the best loss when
the objective is deterministic, else the step's loss), or whose `succeeded(pixels) -> bool [B]`
holds (e.g. all its validation prompts already give the target), stops: its pixels are frozen and
it takes no more updates; the run ends when every image has stopped. `image_steps` [B] says how
many steps each image ran. A frozen image still rides along in its batch's forward until the whole
batch stops: the compute saved is the wall time of the steps no image needed.

`optimizer=apgd` (visual_attacks.apgd) is a whole loop of its own, registered in the same registry.

Random restarts (`restarts` > 1; Madry et al.'s and AutoAttack's restarts): `steps` forward+backward
passes are shared out over `restarts` runs of the optimizer (the first `steps % restarts` runs one
pass more), each from its own random start in the ball (restart r: `seed + r`, whatever
`random_start` says). Per image the best result is kept: an image that stopped early (its loss under
the threshold, or `succeeded`) keeps that restart's pixels and sits out the later restarts (its pixels
are not replaced and its `image_steps` stop counting, though it rides along in the batch); else the
lowest loss wins, scored by `select` where one is given (a fixed validation batch: comparable between
restarts), else by the restart's own best loss. The runs go on until every image stopped or the
passes ran out; a checkpoint saves the restarts done so far beside each restart's own state, so a
killed attack resumes mid-restart.

To run textbook PGD (Madry et al.) on a classifier, minimise minus the cross-entropy of
the true label with random_start=False and keep_best=False: tests/test_pgd.py checks the
iterates are identical. Attack math runs in fp32 whatever the model's dtype; no autograd
graph survives a step, so memory stays flat however many steps run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from mmsafety.preemption import SaveOnSignal
from mmsafety.records import atomic_write_bytes
from mmsafety.registry import Registry

Objective = Callable[[torch.Tensor, int], torch.Tensor]
Select = Callable[[torch.Tensor], torch.Tensor]

# name -> direction(grad, cfg, state, step): the image then moves by -step_size * direction.
# An entry with an `attack_loop` attribute (visual_attacks.apgd) runs the whole attack instead.
OPTIMIZERS: Registry[Callable] = Registry("attack.optimizer", kind="optimizer", modules=("visual_attacks.apgd",))


@dataclass(frozen=True)
class PGDConfig:
    norm: Literal["linf", "l2", "none"] = "linf"
    eps: float = 8 / 255          # budget in pixel units on [0,1] (L2: over the whole image)
    step_size: float = 1 / 255
    steps: int = 500
    random_start: bool = False
    optimizer: str = "sign"        # a name in OPTIMIZERS: sign | sgd | adam
    keep_best: bool = True         # return each image's lowest-loss iterate, not the last
    select_every: int = 10         # with a `select` scorer: score the iterate every N steps
    early_stop_loss: float | None = None  # an image stops once its loss is below this (per image)
    early_stop_window: int = 1     # ... at this many early-stop checks in a row
    check_every: int = 10          # early-stop checks sync with the host; do them every N steps (1: every step)
    quantize: bool = False         # keep iterates on the 8-bit grid (what a PNG can store)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    apgd_alpha: float = 2.0        # apgd: first step size = alpha * eps (Croce & Hein: 2; RobustVLM's targeted runs: 1)
    apgd_rho: float = 0.75         # apgd: halve the step when under rho of a checkpoint window's steps improved
    seed: int = 0
    restarts: int = 1              # >1: share `steps` over this many runs from random starts, keep each image's best


@dataclass
class AttackResult:
    pixels: torch.Tensor          # [B,3,H,W] in [0,1], fp32
    best_loss: torch.Tensor       # [B], the loss of `pixels` (under `select` when one was given)
    losses: torch.Tensor          # [steps_run, B]: loss at each step's iterate (before its update)
    steps_run: int
    stopped_early: bool = False   # every image stopped before the budget ran out
    extra: dict = field(default_factory=dict)
    image_steps: torch.Tensor | None = None  # [B] steps each image ran before it stopped (None: all ran steps_run)
    stopped: torch.Tensor | None = None      # [B] bool: the image stopped early (None: no early stop configured)


@dataclass
class Checkpoint:
    """Save the attack state every `every` steps to `path` (atomically), and resume from it.

    The state is everything the next step depends on: the iterate, the optimizer's moments, the
    best-so-far, the loss history, the step, and `objective_state()` (e.g. the prompt sampler's RNG),
    restored through `load_objective_state`. A resumed attack takes the same steps as an
    uninterrupted one, so on the CPU its result is bit-identical (tests/test_paper_protocols.py)."""
    path: Path
    every: int
    objective_state: Callable[[], dict] = dict
    load_objective_state: Callable[[dict], None] = lambda state: None
    # The job's config sha256: a state saved by another config (a failed run whose folder a corrected
    # command took over) is not resumed, so an iterate from another budget or target never leaks in.
    config_sha256: str | None = None

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({**state, "objective": self.objective_state(), "config_sha256": self.config_sha256}, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self, device) -> dict | None:
        state = read_state(self.path, device)
        if state is None or state.pop("config_sha256", None) != self.config_sha256:
            return None
        self.load_objective_state(state.pop("objective"))
        return state


def read_state(path: Path, device="cpu") -> dict | None:
    """A saved attack state: tensors, numbers and containers only (weights_only: no pickled code runs)."""
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


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
    if cfg.norm == "none":  # Qi et al.'s unconstrained attack: start from uniform noise
        return _project(torch.rand(x0.shape, generator=gen, device=x0.device), x0, cfg)
    noise = (torch.rand(x0.shape, generator=gen, device=x0.device) * 2 - 1) * cfg.eps  # x0 + U[-eps, eps]
    return _project(x0 + noise, x0, cfg)


@OPTIMIZERS.register("sign")
def sign_direction(grad: torch.Tensor, cfg: PGDConfig, state: dict, step: int) -> torch.Tensor:
    if cfg.norm == "l2":
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return grad.sign()


@OPTIMIZERS.register("sgd")
def gradient_direction(grad: torch.Tensor, cfg: PGDConfig, state: dict, step: int) -> torch.Tensor:
    """Fu et al.'s update (`train_adversarial_image.py`): image -= step_size * grad."""
    return grad


@OPTIMIZERS.register("adam")
def adam_direction(grad: torch.Tensor, cfg: PGDConfig, state: dict, step: int) -> torch.Tensor:
    b1, b2 = cfg.adam_betas
    state["m"] = b1 * state.get("m", torch.zeros_like(grad)) + (1 - b1) * grad
    state["v"] = b2 * state.get("v", torch.zeros_like(grad)) + (1 - b2) * grad * grad
    m_hat, v_hat = state["m"] / (1 - b1 ** (step + 1)), state["v"] / (1 - b2 ** (step + 1))
    direction = m_hat / (v_hat.sqrt() + 1e-8)
    return direction if cfg.norm == "l2" else direction.sign()


class EarlyStop:
    """Which images still run (per image: see the module docstring). Its state goes into the checkpoint."""

    def __init__(self, cfg: PGDConfig, n: int, device, succeeded: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.cfg, self.succeeded = cfg, succeeded
        self.enabled = cfg.early_stop_loss is not None or succeeded is not None
        self.active = torch.ones(n, dtype=torch.bool, device=device)
        self.below = torch.zeros(n, dtype=torch.long, device=device)   # checks in a row below the threshold
        self.image_steps = torch.zeros(n, dtype=torch.long, device=device)

    def state(self) -> dict:
        return {"active": self.active, "below": self.below, "image_steps": self.image_steps}

    def load(self, state: dict | None) -> None:
        if state:
            self.active, self.below, self.image_steps = state["active"], state["below"], state["image_steps"]

    def ran(self) -> None:
        """One more step for every image still running."""
        self.image_steps += self.active.long()

    def check(self, step: int, reached: torch.Tensor, candidate: torch.Tensor) -> bool:
        """After `step`: stop the images that are done; True once none runs. `reached`: the loss the
        threshold is compared to; `candidate`: the pixels `succeeded` judges (the returned ones)."""
        if not self.enabled or (step + 1) % self.cfg.check_every:
            return False
        done = torch.zeros_like(self.active)
        if self.cfg.early_stop_loss is not None:
            self.below = torch.where(reached < self.cfg.early_stop_loss, self.below + 1, torch.zeros_like(self.below))
            done |= self.below >= self.cfg.early_stop_window
        if self.succeeded is not None and bool(self.active.any()):
            idx = self.active.nonzero().flatten()
            hit = torch.zeros_like(self.active)
            hit[idx] = self.succeeded(candidate[idx]).to(self.active.device).bool()
            done |= hit
        self.active &= ~done
        return not bool(self.active.any())

    def freeze(self, new_x: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The update for running images; a stopped image keeps its pixels."""
        if not self.enabled:
            return new_x
        return torch.where(self.active.view(-1, 1, 1, 1), new_x, x)

    def history(self, loss: torch.Tensor) -> torch.Tensor:
        """A step's losses for the record: NaN for an image that had already stopped."""
        return loss if not self.enabled else torch.where(self.active, loss, torch.full_like(loss, float("nan")))


def pgd(objective: Objective, clean: torch.Tensor, cfg: PGDConfig,
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        monitor: Callable[[int, torch.Tensor], None] | None = None, monitor_every: int = 0,
        select: Select | None = None, checkpoint: Checkpoint | None = None,
        succeeded: Callable[[torch.Tensor], torch.Tensor] | None = None) -> AttackResult:
    """Minimise `objective` over pixels near `clean` [B,3,H,W] in [0,1]. `on_step(step, loss, best)`
    receives device tensors (a progress bar should throttle its own host syncs); `monitor(step, best_x)`
    runs every `monitor_every` steps (0: never), e.g. for held-out checks. `select(pixels) -> loss [B]`:
    with keep_best, the fixed score that picks the best iterate (see the module docstring). `checkpoint`:
    save the state every N steps and resume from a saved one. `succeeded(pixels) -> bool [B]`: stop an
    image once it holds (checked every cfg.check_every steps)."""
    if cfg.restarts > 1:
        return pgd_restarts(objective, clean, cfg, on_step=on_step, monitor=monitor, monitor_every=monitor_every,
                            select=select, checkpoint=checkpoint, succeeded=succeeded)
    direction = OPTIMIZERS.get(cfg.optimizer)
    loop = getattr(direction, "attack_loop", None)
    if loop is not None:  # e.g. apgd: its own step-size schedule and iterates
        return loop(objective, clean, cfg, on_step=on_step, monitor=monitor, monitor_every=monitor_every,
                    select=select, checkpoint=checkpoint, succeeded=succeeded)
    x0 = clean.detach().float()
    gen = torch.Generator(device=x0.device).manual_seed(cfg.seed)
    x = _random_start(x0, cfg, gen) if cfg.random_start else x0.clone()
    best_x, best_loss = x.clone(), torch.full((x0.shape[0],), float("inf"), device=x0.device)
    losses, state, stopped_early, first_step = [], {}, False, 0
    stop = EarlyStop(cfg, x0.shape[0], x0.device, succeeded)
    saved = checkpoint.load(x0.device) if checkpoint is not None else None
    if saved is not None:
        x, best_x, best_loss, state = saved["x"], saved["best_x"], saved["best_loss"], saved["optimizer"]
        losses, first_step = list(saved["losses"]), saved["step"]
        stop.load(saved.get("early_stop"))

    def consider(candidate: torch.Tensor, loss: torch.Tensor) -> None:
        nonlocal best_x, best_loss
        # A stopped image keeps the iterate it stopped on (HarmBench returns the first one below its
        # threshold), even where a later score of the same pixels comes out lower.
        improved = (loss < best_loss) & stop.active
        best_loss = torch.where(improved, loss, best_loss)
        best_x = torch.where(improved.view(-1, 1, 1, 1), candidate, best_x)  # no host sync, unlike a mask index

    def save(step: int) -> None:
        checkpoint.save({"x": x, "best_x": best_x, "best_loss": best_loss, "optimizer": state,
                         "losses": losses, "step": step, "early_stop": stop.state()})

    # With a checkpoint, a cluster's warning (SIGUSR2) or preemption (SIGTERM) is held to the next step
    # boundary, where the state reached is saved before the signal goes on (mmsafety.preemption).
    with SaveOnSignal() if checkpoint is not None else contextlib.nullcontext() as held:
        for step in range(first_step, cfg.steps):
            if held is not None and held.pending:
                save(step)
                held.release()
            if checkpoint is not None and checkpoint.every and step > first_step and step % checkpoint.every == 0:
                save(step)
            if hasattr(objective, "loss_and_grad"):  # e.g. an ensemble that takes each surrogate's gradient in turn
                loss, grad = objective.loss_and_grad(x.detach(), step)
            else:
                x.requires_grad_(True)
                loss = objective(x, step)
                grad, = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                loss = loss.detach().float()
                losses.append(stop.history(loss))
                stop.ran()
                if cfg.keep_best:
                    if select is None:
                        consider(x.detach(), loss)
                    elif step % cfg.select_every == 0:
                        consider(x.detach(), select(x.detach()).detach().float())
                if on_step is not None:
                    on_step(step, loss, best_loss if cfg.keep_best else loss)
                if monitor is not None and monitor_every and step and step % monitor_every == 0:
                    monitor(step, best_x if cfg.keep_best else x.detach())
                reached = best_loss if cfg.keep_best and select is None else loss
                if stop.check(step, reached, best_x if cfg.keep_best else x.detach()):
                    stopped_early = True
                    break
                x = stop.freeze(_project(x.detach() - cfg.step_size * direction(grad.float(), cfg, state, step), x0, cfg),
                                x.detach())
    steps_run = len(losses)
    x = x.detach()
    if not cfg.keep_best:
        # The last iterate, as Qi et al. and Fu et al. return it (scored for the record).
        with torch.no_grad():
            last_loss = objective(x, steps_run).detach().float() if not stopped_early else loss
        best_x, best_loss = x, last_loss
    elif not stopped_early and steps_run:
        # The last update produced an iterate nobody has scored yet.
        with torch.no_grad():
            consider(x, (select(x) if select is not None else objective(x, steps_run)).detach().float())
    history = torch.stack(losses) if losses else torch.empty(0, x0.shape[0])
    return AttackResult(best_x.detach(), best_loss, history, steps_run, stopped_early,
                        image_steps=stop.image_steps.cpu() if stop.enabled else None,
                        stopped=~stop.active if stop.enabled else None)


def restart_steps(steps: int, restarts: int) -> list[int]:
    """The passes of each restart: `steps` shared out, the first `steps % restarts` one more."""
    return [steps // restarts + (r < steps % restarts) for r in range(restarts)]


def pgd_restarts(objective: Objective, clean: torch.Tensor, cfg: PGDConfig,
                 on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 monitor: Callable[[int, torch.Tensor], None] | None = None, monitor_every: int = 0,
                 select: Select | None = None, checkpoint: Checkpoint | None = None,
                 succeeded: Callable[[torch.Tensor], torch.Tensor] | None = None) -> AttackResult:
    """`cfg.restarts` runs of pgd from random starts, per image the best kept (module docstring)."""
    x0 = clean.detach().float()
    n, dev = x0.shape[0], x0.device
    budgets = restart_steps(cfg.steps, cfg.restarts)
    best_x, best_score = x0.clone(), torch.full((n,), float("inf"), device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    image_steps = torch.zeros(n, dtype=torch.long)
    losses: list[torch.Tensor] = []
    first = 0
    saved = checkpoint.load(dev) if checkpoint is not None else None
    if saved is not None:
        best_x, best_score, done, image_steps = saved["best_x"], saved["best_score"], saved["done"], saved["image_steps"]
        losses, first = list(saved["losses"]), saved["restart"]
    offset = sum(budgets[:first])
    for r in range(first, cfg.restarts):
        if not budgets[r] or bool(done.all()):
            break
        run_cfg = dataclasses.replace(cfg, restarts=1, steps=budgets[r], random_start=True, seed=cfg.seed + r)
        inner = (dataclasses.replace(checkpoint, path=checkpoint.path.with_name(f"{checkpoint.path.stem}-restart{r}{checkpoint.path.suffix}"))
                 if checkpoint is not None else None)
        shifted = (lambda step, loss, best, o=offset: on_step(o + step, loss, best)) if on_step else None
        watched = (lambda step, x, o=offset: monitor(o + step, x)) if monitor else None
        result = pgd(objective, clean, run_cfg, shifted, watched, monitor_every, select, inner, succeeded)
        with torch.no_grad():
            score = result.best_loss if cfg.keep_best or select is None else select(result.pixels).detach().float()
            stopped = result.stopped if result.stopped is not None else torch.zeros_like(done)
            take = ~done & (stopped | (score < best_score))
            best_score = torch.where(take, score, best_score)
            best_x = torch.where(take.view(-1, 1, 1, 1), result.pixels, best_x)
            ran = result.image_steps if result.image_steps is not None else torch.full((n,), result.steps_run)
            image_steps += torch.where(done.cpu(), torch.zeros_like(ran), ran)
            losses.extend(torch.where(done, torch.full_like(row, float("nan")), row) for row in result.losses)
            done |= stopped
        offset += budgets[r]
        if checkpoint is not None:
            checkpoint.save({"best_x": best_x, "best_score": best_score, "done": done, "image_steps": image_steps,
                             "losses": losses, "restart": r + 1, "step": offset})
    history = torch.stack(losses) if losses else torch.empty(0, n)
    early = cfg.early_stop_loss is not None or succeeded is not None
    return AttackResult(best_x, best_score, history, len(losses), bool(done.all()),
                        extra={"restarts": cfg.restarts}, image_steps=image_steps if early else None,
                        stopped=done if early else None)
