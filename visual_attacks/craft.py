"""Craft stage: PGD on one model, the clean and adversarial images saved as sha256-named PNGs.

The files are the contract with the judge stage (visual_attacks.judge): a PNG saved here can be
judged by this model or by any other that has the capabilities the case's judge needs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from mmsafety.attack_case import AttackBase, AttackCase
from mmsafety.config import pixel_amount, plain
from mmsafety.models.base import PixelLoss
from mmsafety.models.pixels import pixels_to_pil
from mmsafety.records import atomic_write_bytes
from visual_attacks.pgd import AttackResult, PGDConfig, pgd


def pgd_config(attack) -> PGDConfig:
    return PGDConfig(
        norm=plain(attack.norm),
        eps=pixel_amount("attack.eps", attack.eps), step_size=pixel_amount("attack.step_size", attack.step_size),
        steps=attack.steps, random_start=attack.random_start, optimizer=attack.optimizer,
        keep_best=attack.keep_best, early_stop_loss=attack.early_stop_loss, quantize=attack.quantize, seed=attack.seed,
    )


def save_png(pixels: torch.Tensor, folder: Path) -> Path:
    """Lossless 8-bit PNG named by the sha256 of its bytes (same image, same name, anywhere)."""
    buf = io.BytesIO()
    pixels_to_pil(pixels).save(buf, format="PNG")
    data = buf.getvalue()
    path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def write_loss_curve(losses: torch.Tensor, out_dir: Path) -> dict[str, str]:
    """CSV (step, loss per image, mean) and a PNG plot of the attack's loss, each written atomically
    (a leaderboard may read them while the job runs)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step"] + [f"image_{i}" for i in range(losses.shape[1])] + ["mean"])
    for step, row in enumerate(losses.tolist()):
        w.writerow([step] + [f"{v:.5f}" for v in row] + [f"{sum(row) / len(row):.5f}"])
    atomic_write_bytes(out_dir / "loss_curve.csv", buf.getvalue().encode())
    files = {"csv": "loss_curve.csv"}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return files
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(losses.numpy(), color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(losses.mean(1).numpy(), color="tab:red", lw=1.8, label="mean over images")
    ax.set(xlabel="PGD step", ylabel="attack loss", yscale="log" if bool((losses > 0).all()) else "linear", title="Attack loss")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / "loss_curve.png", png.getvalue())
    files["png"] = "loss_curve.png"
    return files


@dataclass
class Crafted:
    """What the craft stage leaves: PNG paths per base index, the PGD result and its cost."""

    clean_pngs: dict[int, Path]
    adversarial_pngs: dict[int, Path]
    result: AttackResult
    seconds: float
    loss_curve: dict[str, str]


def clean_pixels(adapter: PixelLoss, bases: list[AttackBase]) -> torch.Tensor:
    """The bases at the model's input size, on the 8-bit grid from the start: the clean PNG is then
    exactly the attack's x0, and an eps that is a multiple of 1/255 still holds after the
    adversarial image is rounded."""
    return adapter.to_input_pixels([base.image for base in bases]).mul(255).round().div(255)


def craft(case: AttackCase, adapter: PixelLoss, bases: list[AttackBase], attack, out_dir: Path, indices,
          monitor: Callable[[int, torch.Tensor], None] | None = None, log=print) -> Crafted:
    """Attack every base in one batched PGD run and save the PNGs of `indices` under out_dir/images.

    A resumed run attacks the whole batch again and saves only the missing images: the images
    share one batched PGD run, so the same batch gives bit-identical images on the CPU, while a
    smaller batch could round differently. `monitor(step, best_x)` runs every attack.check_every steps.
    """
    pcfg = pgd_config(attack)
    clean = clean_pixels(adapter, bases)
    objective = case.objective(adapter, bases, clean, attack)
    bar = tqdm(total=pcfg.steps, unit="step", desc=f"{attack.name} eps={attack.eps}", dynamic_ncols=True, mininterval=1.0)

    def on_step(step, loss, best):
        bar.update(1)
        if step % 10 == 0:  # one host sync per 10 steps, for the progress bar only
            bar.set_postfix(loss=f"{loss.mean().item():.3f}", best=f"{best.mean().item():.3f}")

    start = time.perf_counter()
    try:
        result = pgd(objective, clean.to(adapter.device), pcfg, on_step, monitor=monitor, monitor_every=attack.check_every)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    curve = write_loss_curve(result.losses.cpu(), out_dir)
    images = out_dir / "images"
    crafted = Crafted({}, {}, result, seconds, curve)
    for i in sorted(indices):
        crafted.clean_pngs[i] = save_png(clean[i], images)
        crafted.adversarial_pngs[i] = save_png(result.pixels[i].cpu(), images)
    log(f"attack: {result.steps_run} steps in {seconds:.1f}s ({seconds / max(1, result.steps_run) * 1000:.0f} ms/step)")
    return crafted
