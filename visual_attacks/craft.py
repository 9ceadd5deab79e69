"""Craft stage: PGD on one model or a weighted ensemble (optionally under EOT), the clean and adversarial images saved as sha256-named PNGs.

The files are the contract with the judge stage (visual_attacks.judge): a PNG saved here can be
judged by this model or by any other that has the capabilities the case's judge needs.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from mmsafety.attack_case import AttackBase, AttackCase
from mmsafety.config import pixel_amount, plain
from mmsafety.errors import ConfigError, UserError
from mmsafety.models.base import PixelLoss
from mmsafety.models.pixels import pil_to_pixels, pixels_to_pil
from mmsafety.oom import HalvingBatcher
from mmsafety.progress import progress
from mmsafety.records import atomic_write_bytes
from visual_attacks.config_checks import check_l2_budget
from visual_attacks.ensemble import EnsembleObjective, Surrogate, surrogate_view
from visual_attacks.eot import EOTransforms, eot_enabled
from visual_attacks.pgd import OPTIMIZERS, Checkpoint, PGDConfig, pgd, read_state
from visual_attacks.png_names import png_name


def pgd_config(attack) -> PGDConfig:
    OPTIMIZERS.get(attack.optimizer)  # an unknown name: one line that lists the registered ones
    return PGDConfig(
        norm=plain(attack.norm),
        eps=pixel_amount("attack.eps", attack.eps), step_size=pixel_amount("attack.step_size", attack.step_size),
        steps=attack.steps, random_start=attack.random_start, optimizer=attack.optimizer,
        keep_best=attack.keep_best, select_every=attack.select_every, early_stop_loss=attack.early_stop_loss,
        early_stop_window=attack.get("early_stop_window", 1),
        check_every=attack.early_stop_every, quantize=attack.quantize, seed=attack.seed,
        apgd_alpha=attack.get("apgd_alpha", 2.0), apgd_rho=attack.get("apgd_rho", 0.75),
        restarts=attack.get("restarts", 1),
    )


def validation_success(case: AttackCase, adapter, objective) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`succeeded(pixels) -> bool [N]`: each image's answers to the objective's fixed validation batch of
    training prompts all meet the case's headline (e.g. a well-formed tool call). For cases with a target
    and a prompt sampler (the tool-call case); None otherwise. The held-out prompts are never used."""
    sampler, target = getattr(getattr(objective, "sampler", None), "validation", None), getattr(case, "target", None)
    if not sampler or target is None or not hasattr(adapter, "generate"):
        return None
    prompts, tokens = list(sampler), getattr(case, "max_new_tokens", 256)

    def succeeded(pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        images = pixels.mul(255).round().div(255).repeat_interleave(len(prompts), dim=0)  # as a PNG stores them
        outs = adapter.generate(images, prompts * n, max_new_tokens=tokens)
        hits = [bool(target.judge(o, p).as_dict()[case.headline]) for o, p in zip(outs, prompts * n)]
        return torch.tensor(hits).view(n, len(prompts)).all(1)

    return succeeded


def success_check(case: AttackCase, adapter, objective, attack) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """attack.early_stop_success: the validation check, refused in one line where the case has none."""
    if not attack.get("early_stop_success"):
        return None
    check = validation_success(case, adapter, objective)
    if check is None:
        raise ConfigError(f"attack.early_stop_success=true: case {type(case).__name__} has no validation-prompt check "
                          f"(only the tool-call case has one); use attack.early_stop_loss=LOSS instead")
    return check


def attack_state_path(out_dir: Path, indices) -> Path:
    """Where the attack state of the chunk of images `indices` is saved: one file per chunk, named by
    its images, so a chunk halved after running out of memory never resumes another chunk's state."""
    return out_dir / f"attack_state_images{indices[0]}-{indices[-1]}.pt"


def attack_checkpoint(path: Path, attack, objective, config_sha256: str | None = None) -> Checkpoint | None:
    """The attack state saved every `attack.checkpoint_every` steps in the run folder, so a killed or
    preempted job resumes mid-attack instead of from step 0 (0: off); only a state the same job config
    saved is resumed."""
    if not attack.checkpoint_every:
        return None
    if hasattr(objective, "state_dict"):
        return Checkpoint(path, attack.checkpoint_every, objective.state_dict, objective.load_state_dict, config_sha256)
    return Checkpoint(path, attack.checkpoint_every, config_sha256=config_sha256)


def saved_step(checkpoint: Checkpoint | None) -> int:
    """The step a resumed chunk's attack starts from (its saved state's, as pgd will load it), else 0."""
    try:
        state = read_state(checkpoint.path) if checkpoint is not None else None
    except Exception:  # pgd reports a state it cannot load
        return 0
    return int(state["step"]) if state and state.get("config_sha256") == checkpoint.config_sha256 else 0


def save_png(pixels: torch.Tensor, folder: Path, index: int, role: str) -> Path:
    """Lossless 8-bit PNG of base image `index` (`role`: clean | adversarial), named
    `0003-adversarial-<sha256 of its bytes>.png` (visual_attacks.png_names): the judge refuses it
    once its bytes no longer match the name."""
    buf = io.BytesIO()
    pixels_to_pil(pixels).save(buf, format="PNG")
    data = buf.getvalue()
    path = folder / png_name(data, index, role)
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def write_loss_curve(losses: torch.Tensor, out_dir: Path, images: list[int] | None = None) -> dict[str, str]:
    """CSV (step, loss per image, mean) and a PNG plot of the attack's loss, each written atomically
    (a leaderboard may read them while the job runs). `losses` [steps, images] may hold NaN where
    an image's chunk stopped early; the mean is over the images still running."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step"] + [f"image_{i}" for i in (images or range(losses.shape[1]))] + ["mean"])
    for step, (row, mean) in enumerate(zip(losses.tolist(), losses.nanmean(1).tolist())):
        w.writerow([step] + [f"{v:.5f}" for v in row] + [f"{mean:.5f}"])
    atomic_write_bytes(out_dir / "loss_curve.csv", buf.getvalue().encode())
    files = {"csv": "loss_curve.csv"}
    try:
        # optional: matplotlib may be missing, handled here
        import matplotlib

        matplotlib.use("Agg")
        # optional: matplotlib may be missing, handled here
        import matplotlib.pyplot as plt
    except ImportError:
        return files
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(losses.numpy(), color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(losses.nanmean(1).numpy(), color="tab:red", lw=1.8, label="mean over images")
    positive = bool((losses.nan_to_num(1.0) > 0).all())
    ax.set(xlabel="PGD step", ylabel="attack loss", yscale="log" if positive else "linear", title="Attack loss")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / "loss_curve.png", png.getvalue())
    files["png"] = "loss_curve.png"
    return files


@dataclass
class CraftedImage:
    """One base image's attack: its saved PNGs and what PGD reported for it."""

    clean_png: Path
    adversarial_png: Path
    best_loss: float
    steps_run: int
    seconds: float  # of the batched PGD run (chunk) this image was part of


@dataclass
class Crafted:
    """What the craft stage leaves: one CraftedImage per base index it saved, the loss curve files
    and how the images were batched (after any out-of-memory halving)."""

    images: dict[int, CraftedImage]
    loss_curve: dict[str, str]
    seconds: float
    execution: dict
    details: dict[int, dict] = field(default_factory=dict)  # per image, more for its sample (e.g. a worst case's winner)


def clean_pixels(adapter: PixelLoss, bases: list[AttackBase]) -> torch.Tensor:
    """The bases at the model's input size, on the 8-bit grid from the start: the clean PNG is then
    exactly the attack's x0, and an eps that is a multiple of 1/255 still holds after the
    adversarial image is rounded."""
    return adapter.to_input_pixels([base.image for base in bases]).mul(255).round().div(255)


def canvas_pixels(bases: list[AttackBase], max_side: int) -> torch.Tensor:
    """The bases on the ensemble's canvas: [N,3,H,W] in [0,1] on the 8-bit grid, at the first base's
    size with its longest side capped at `max_side` (the images of one batched run share a size;
    attack.images_per_batch=1 keeps each image's own)."""
    width, height = bases[0].image.size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [b.image.convert("RGB") for b in bases]
    return torch.stack([pil_to_pixels(im if im.size == size else im.resize(size, Image.Resampling.BICUBIC))
                        for im in images])


def ensemble_objective(case: AttackCase, adapter: PixelLoss, chunk: list[AttackBase], attack,
                       surrogates: list[Surrogate] | None) -> tuple[torch.Tensor, EnsembleObjective]:
    """The clean canvas and the objective of an ensemble (or EOT) attack. Without surrogates the job's
    model is the one surrogate and the canvas is its input size, as in a single-model attack."""
    if surrogates:
        canvas = canvas_pixels(chunk, attack.canvas_max_side)
    else:
        canvas = clean_pixels(adapter, chunk)
        surrogates = [Surrogate(adapter.name, 1.0, adapter)]
    built = [Surrogate(s.name, s.weight, s.adapter,
                       case.objective(s.adapter, chunk, surrogate_view(s.adapter, canvas).detach(), attack))
             for s in surrogates]
    eot = getattr(attack, "eot", None)
    return canvas, EnsembleObjective(built, EOTransforms(eot, attack.seed) if eot_enabled(eot) else None)


def _attack_chunk(case: AttackCase, adapter: PixelLoss, bases: list[AttackBase], indices, attack,
                  monitor: Callable | None, out_dir: Path, surrogates: list[Surrogate] | None = None,
                  config_sha256: str | None = None) -> list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, int, float]]:
    """One batched PGD run over `bases[indices]`: per image (clean, adversarial, best loss, losses, steps, seconds)."""
    pcfg = pgd_config(attack)
    chunk = [bases[i] for i in indices]
    if surrogates or eot_enabled(getattr(attack, "eot", None)):
        clean, objective = ensemble_objective(case, adapter, chunk, attack, surrogates)
    else:
        clean = clean_pixels(adapter, chunk)
        objective = case.objective(adapter, chunk, clean, attack)
    check_l2_budget(pcfg.norm, pcfg.eps, tuple(clean.shape[1:]))
    checkpoint = attack_checkpoint(attack_state_path(out_dir, indices), attack, objective, config_sha256)
    bar = progress(pcfg.steps, f"{attack.name} eps={attack.eps}", "step", initial=saved_step(checkpoint))

    def on_step(step, loss, best):
        bar.update(1)
        if step % 10 == 0:  # one host sync per 10 steps, for the progress bar only
            bar.set_postfix(loss=f"{loss.mean().item():.3f}", best=f"{best.mean().item():.3f}")

    chunk_monitor = (lambda step, best_x: monitor(step, best_x, list(indices))) if monitor else None
    begin = time.perf_counter()
    try:
        result = pgd(objective, clean.to(adapter.device), pcfg, on_step, monitor=chunk_monitor,
                     monitor_every=attack.check_every,
                     select=getattr(objective, "validation", None),  # universal objectives: a fixed validation batch
                     checkpoint=checkpoint,
                     succeeded=success_check(case, adapter, objective, attack))
    finally:
        bar.close()
    seconds = time.perf_counter() - begin
    losses = result.losses.cpu()
    steps = result.image_steps.tolist() if result.image_steps is not None else [result.steps_run] * len(indices)
    return [(clean[k], result.pixels[k].cpu(), result.best_loss[k].item(), losses[:, k], steps[k], seconds)
            for k in range(len(indices))]


def save_crafted(path: Path, runs: list, config_sha256: str | None) -> None:
    """A finished chunk's results, saved atomically: the samples of a chunk are written only once every
    chunk is crafted and judged, so without this a job stopped (requeued) in a later chunk would attack
    the finished ones again from their last periodic save."""
    buf = io.BytesIO()
    torch.save({"config_sha256": config_sha256,
                "results": [[clean.cpu(), adversarial, best_loss, losses, steps, seconds]
                            for (clean, adversarial, best_loss, losses, steps, seconds), _ in runs]}, buf)
    atomic_write_bytes(path, buf.getvalue())


def crafted_before(path: Path, chunk: list[int], config_sha256: str | None) -> list | None:
    """The results `save_crafted` saved for this chunk under this job config, as batcher.run returns them;
    None when there are none (or they are another config's, or unreadable: the chunk is attacked)."""
    try:
        saved = read_state(path)
    except Exception:
        return None
    if not saved or saved.get("config_sha256") != config_sha256 or len(saved.get("results", ())) != len(chunk):
        return None
    return [(tuple(result), None) for result in saved["results"]]


def previous_losses(out_dir: Path, images: set[int]) -> dict[int, torch.Tensor]:
    """Loss histories of `images` from the loss curve an earlier (interrupted) run wrote, so that a
    resumed run's curve still covers the chunks it does not attack again."""
    try:
        with open(out_dir / "loss_curve.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {i: [float(r[f"image_{i}"]) for r in rows] for i in images if rows and f"image_{i}" in rows[0]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {i: torch.tensor([v for v in values if v == v]) for i, values in columns.items()}


def _loss_table(per_image: dict[int, torch.Tensor]) -> torch.Tensor:
    """[steps, images] in image order; chunks that stopped early are padded with NaN."""
    order = sorted(per_image)
    steps = max(per_image[i].shape[0] for i in order)
    table = torch.full((steps, len(order)), float("nan"))
    for col, i in enumerate(order):
        table[: per_image[i].shape[0], col] = per_image[i]
    return table


def craft(case: AttackCase, adapter: PixelLoss, bases: list[AttackBase], attack, out_dir: Path, indices,
          monitor: Callable[[int, torch.Tensor, list[int]], None] | None = None, log=print,
          surrogates: list[Surrogate] | None = None, config_sha256: str | None = None) -> Crafted:
    """Attack the bases in chunks of `attack.images_per_batch` per batched PGD run and save the PNGs of
    `indices` under out_dir/images; only chunks holding one of `indices` run.

    A resumed run attacks such a chunk whole again, from its last saved attack state when there is
    one (attack.checkpoint_every), and saves only the missing images: the images of a chunk share one
    batched PGD run, so the same chunk gives bit-identical images on the CPU, while a smaller one
    could round differently. Out of memory halves the chunk (down to one image,
    then a one-line error naming what to lower). `monitor(step, best_x, image_indices)` runs every
    attack.check_every steps. `surrogates`: craft one perturbation on their weighted ensemble
    (visual_attacks.ensemble), on a canvas of the bases' own size (attack.canvas_max_side); `adapter`
    then only places the canvas (its device). With attack.eot.samples > 0 each step averages over
    random transforms (visual_attacks.eot).
    """
    size = attack.images_per_batch
    wanted = set(indices)
    chunks = [list(range(s, min(s + size, len(bases)))) for s in range(0, len(bases), size)]
    batcher = HalvingBatcher(size)
    images_dir = out_dir / "images"
    crafted = Crafted({}, {}, 0.0, {})
    losses: dict[int, torch.Tensor] = {}
    start = time.perf_counter()
    for chunk in chunks:
        if not wanted.intersection(chunk):
            continue
        done = out_dir / f"attack_state_done_images{chunk[0]}-{chunk[-1]}.pt"  # run.py removes attack_state*.pt
        runs = crafted_before(done, chunk, config_sha256) if attack.checkpoint_every else None
        if runs is not None:
            log(f"images{chunk[0]}-{chunk[-1]}: crafted before the job was stopped (saved), not attacked again")
        else:
            runs = batcher.run(lambda idx: _attack_chunk(case, adapter, bases, idx, attack, monitor, out_dir,
                                                             surrogates, config_sha256),
                               chunk)
            if attack.checkpoint_every and all(result is not None for result, _ in runs):
                save_crafted(done, runs, config_sha256)
        for i, (result, reason) in zip(chunk, runs):
            if result is None:
                raise UserError(f"out of memory attacking one image ({reason.split('(', 1)[-1].rstrip(')')}); lower "
                                f"attack.prompts_per_step (now {attack.prompts_per_step}) or set "
                                f"placement.gradient_checkpointing=true")
            clean, adversarial, best_loss, image_losses, steps_run, seconds = result
            losses[i] = image_losses
            if i in wanted:
                crafted.images[i] = CraftedImage(save_png(clean, images_dir, i, "clean"),
                                                 save_png(adversarial, images_dir, i, "adversarial"),
                                                 best_loss, steps_run, seconds)
    crafted.seconds = time.perf_counter() - start
    if batcher.halvings:
        log(f"out of memory: attack.images_per_batch lowered from {size} to {batcher.batch_size}")
    crafted.execution = {"images_per_batch": size, "final_images_per_batch": batcher.batch_size,
                         "halvings": batcher.halvings}
    losses = {**previous_losses(out_dir, set(range(len(bases))) - set(losses)), **losses}
    crafted.loss_curve = write_loss_curve(_loss_table(losses), out_dir, sorted(losses)) if losses else {}
    steps = max((c.steps_run for c in crafted.images.values()), default=0)
    log(f"attack: {steps} steps in {crafted.seconds:.1f}s ({crafted.seconds / max(1, steps) * 1000:.0f} ms/step)")
    return crafted
