"""One attack job: craft one image per base image, save it as PNG, judge it as deployed.

What to attack, the loss and the judge come from the configured attack case (conf/case/).
Every success rate comes from the saved 8-bit PNG, reloaded from disk and passed through
the model's own (non-differentiable) processor; the clean image's rates under the same
judge are the baseline in every report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from hydra.utils import instantiate
from PIL import Image
from tqdm import tqdm

from mmsafety.attack_case import AttackCase
from mmsafety.config import pixel_amount, plain
from mmsafety.errors import ConfigError, UserError
from mmsafety.models.base import VLMAdapter
from mmsafety.models.pixels import pil_to_pixels, pixels_to_pil
from mmsafety.oom import HalvingBatcher
from mmsafety.records import RunRecord, atomic_write_bytes
from visual_attacks.config_checks import check_l2_budget
from visual_attacks.pgd import PGDConfig, pgd
from visual_attacks.stealth import lpips_available, lpips_note, stealth_metrics


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


def reload_png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


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
        import matplotlib

        matplotlib.use("Agg")
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


def build_case(cfg) -> AttackCase:
    """The configured case (conf/case/), built from its `_target_`: the attack never imports the
    workload that supplies it (goat_bench supplies the meme verdict case)."""
    from hydra.errors import InstantiationException

    from mmsafety.errors import UserError

    try:
        case = instantiate(cfg.case, _convert_="object")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        cause = e.__cause__ or e
        raise ConfigError(f"case={cfg.case.get('name', '?')}: {type(cause).__name__}: {str(cause).splitlines()[0]}; "
                          f"see conf/case/ for the keys each case takes") from None
    if cfg.attack.objective not in case.objectives:
        raise ConfigError(f"attack.objective={cfg.attack.objective} does not apply to case={cfg.case.name}, "
                          f"which implements {', '.join(case.objectives)}")
    return case


@dataclass
class Crafted:
    """One base image's attack: clean and adversarial pixels [3,H,W] in [0,1] (CPU, fp32)."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    best_loss: float
    losses: torch.Tensor  # [steps_run] of this image
    steps_run: int
    seconds: float        # of the batched PGD run this image was part of


def craft_in_chunks(cfg, case: AttackCase, adapter: VLMAdapter, bases: list, missing: set[int], pcfg: PGDConfig,
                    checks: list[dict], execution: dict) -> Iterator[dict[int, Crafted]]:
    """PGD on the bases in chunks of `attack.images_per_batch` images per forward, yielding each
    chunk's images as soon as they are crafted (so the caller saves and judges them and memory
    holds one chunk, however many images). Only chunks holding a missing image run: a resumed
    run attacks such a chunk whole again and the caller writes only the missing samples, since
    the same chunk gives bit-identical images on the CPU and a smaller one could round
    differently. Out of memory halves the chunk, down to one image, then a one-line error names
    what to lower; `execution` gets the size used in the end."""
    size = cfg.attack.images_per_batch
    batcher = HalvingBatcher(size)
    for first in range(0, len(bases), size):
        chunk = list(range(first, min(first + size, len(bases))))
        if not missing.intersection(chunk):
            continue
        crafted: dict[int, Crafted] = {}
        for i, (result, reason) in zip(chunk, batcher.run(lambda idx: _craft(cfg, case, adapter, bases, idx, pcfg, checks), chunk)):
            if result is None:
                raise UserError(f"out of memory attacking one image ({reason.split('(', 1)[-1].rstrip(')')}); lower "
                                f"attack.prompts_per_step (now {cfg.attack.prompts_per_step}) or set "
                                f"placement.gradient_checkpointing=true")
            crafted[i] = result
        if batcher.halvings > execution["halvings"]:
            tqdm.write(f"out of memory: attack.images_per_batch lowered from {size} to {batcher.batch_size}", file=sys.stderr)
        execution.update(final_images_per_batch=batcher.batch_size, halvings=batcher.halvings)
        yield crafted


def _craft(cfg, case: AttackCase, adapter: VLMAdapter, bases: list, indices, pcfg: PGDConfig,
           checks: list[dict]) -> list[Crafted]:
    """One batched PGD run over `bases[indices]`."""
    chunk = [bases[i] for i in indices]
    # On the 8-bit grid from the start: the clean PNG is then exactly the attack's x0, and an
    # eps that is a multiple of 1/255 still holds after the adversarial image is rounded.
    clean = adapter.to_input_pixels([base.image for base in chunk]).mul(255).round().div(255)
    check_l2_budget(pcfg.norm, pcfg.eps, tuple(clean.shape[1:]))
    objective = case.objective(adapter, chunk, clean, cfg.attack)
    bar = tqdm(total=pcfg.steps, unit="step", desc=f"{cfg.attack.name} eps={cfg.attack.eps}", dynamic_ncols=True, mininterval=1.0)

    def on_step(step, loss, best):
        bar.update(1)
        if step % 10 == 0:  # one host sync per 10 steps, for the progress bar only
            bar.set_postfix(loss=f"{loss.mean().item():.3f}", best=f"{best.mean().item():.3f}")

    def held_out_check(step, best_x):
        """The best images so far, rounded to 8 bits as a PNG would store them, judged like the final ones."""
        rates = [case.judge(adapter, pixels_to_pil(x.cpu()), chunk[k]).rates for k, x in enumerate(best_x)]
        mean = {key: sum(r[key] for r in rates) / len(rates) for key in rates[0]}
        checks.append({"step": step, "images": [indices[0], indices[-1] + 1], "rates": mean})
        tqdm.write(f"step {step}: held-out {case.headline} {mean[case.headline]:.1%}", file=sys.stderr)

    begin = time.perf_counter()
    try:
        result = pgd(objective, clean.to(adapter.device), pcfg, on_step,
                     monitor=held_out_check, monitor_every=cfg.attack.check_every)
    finally:
        bar.close()
    seconds = time.perf_counter() - begin
    losses = result.losses.cpu()
    return [Crafted(clean[k], result.pixels[k].cpu(), result.best_loss[k].item(), losses[:, k], result.steps_run, seconds)
            for k in range(len(indices))]


def _loss_table(losses: dict[int, torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """([steps, images] in image order, the image numbers). Images whose chunk stopped early are
    padded with NaN (no iterate was scored there)."""
    order = sorted(losses)
    table = torch.full((max(len(losses[i]) for i in order), len(order)), float("nan"))
    for col, i in enumerate(order):
        table[: len(losses[i]), col] = losses[i]
    return table, order


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


def judge_and_record(case: AttackCase, adapter: VLMAdapter, base, i: int, crafted: Crafted, record: RunRecord) -> None:
    """Save image `i`'s clean and adversarial pixels as PNGs, judge both reloaded, write its sample."""
    out_dir = record.out_dir
    clean_png = save_png(crafted.clean, out_dir / "images")
    adv_png = save_png(crafted.adversarial, out_dir / "images")
    clean_img, adv_img = reload_png(clean_png), reload_png(adv_png)
    clean_j, adv_j = case.judge(adapter, clean_img, base), case.judge(adapter, adv_img, base)
    stealth = stealth_metrics(pil_to_pixels(clean_img)[None], pil_to_pixels(adv_img)[None])[0]
    record.add_sample({
        "image": i, "key": base.key, "status": "ok", "clean_png": str(clean_png.relative_to(out_dir)),
        "adversarial_png": str(adv_png.relative_to(out_dir)), "best_loss": crafted.best_loss,
        "steps_run": crafted.steps_run, "attack_seconds": crafted.seconds, "stealth": stealth,
        "clean": clean_j.rates, "adversarial": adv_j.rates, "utility": case.utility(clean_j, adv_j, base),
        "outputs": {"clean": clean_j.rows, "adversarial": adv_j.rows}, "base": base.info,
    })
    record.checkpoint()


def run_attack(cfg, adapter: VLMAdapter, record: RunRecord, log=print) -> dict:
    case = build_case(cfg)
    pcfg = pgd_config(cfg.attack)
    out_dir = record.out_dir
    bases = case.bases()
    notes = [] if lpips_available() else [lpips_note()]
    record.update(
        model={"name": cfg.model.name, "id": adapter.model_id, "adapter": adapter.name, "weights_sha256": adapter.weights_sha256},
        spec={"workload": "visual_attack", "attack": cfg.attack.name, "objective": cfg.attack.objective, **case.spec(),
              "headline": case.headline, "norm": pcfg.norm, "eps": pcfg.eps, "step_size": pcfg.step_size,
              "steps": pcfg.steps, "prompts_per_step": cfg.attack.prompts_per_step, "images": len(bases), "notes": notes,
              # For the leaderboard: how to re-score merged records from their samples.
              "sample_key": ["image"], "rescore": "visual_attacks.run:rescore", "group_by": list(case.group_by)},
    )
    for note in notes:
        log(note)
    done = record.done_keys(("image",))
    missing = {i for i in range(len(bases)) if (i,) not in done}
    if missing:
        checks: list[dict] = []
        size = cfg.attack.images_per_batch
        execution = {"images_per_batch": size, "final_images_per_batch": size, "halvings": 0}
        losses = previous_losses(out_dir, set(range(len(bases))) - missing)
        seconds, steps = 0.0, 0
        for crafted in craft_in_chunks(cfg, case, adapter, bases, missing, pcfg, checks, execution):
            losses.update({i: c.losses for i, c in crafted.items()})
            table, images = _loss_table(losses)
            curve = write_loss_curve(table, out_dir, images)
            # Images crafted in one PGD run share its seconds; a halved chunk ran several.
            seconds += sum({c.seconds for c in crafted.values()})
            steps = max(steps, *(c.steps_run for c in crafted.values()))
            for i in sorted(missing.intersection(crafted)):
                judge_and_record(case, adapter, bases[i], i, crafted[i], record)
        record.update(artifacts={"loss_curve": curve}, held_out_checks=checks, execution=execution)
        log(f"attack: {steps} steps in {seconds:.1f}s ({seconds / max(1, steps) * 1000:.0f} ms/step)")
    return summarize(record.samples, case.group_by)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_by_key(rows: list[dict[str, float]]) -> dict[str, float] | None:
    return {k: _mean([r[k] for r in rows if k in r]) for k in rows[0]} if rows else None


def summarize(samples: list[dict], group_by: tuple[str, ...] = ()) -> dict:
    """Means over attacked images; success rates also per value of each `group_by` field of the
    bases' info (for memes: task, and which cue made the meme positive)."""
    ok = [s for s in samples if s.get("status") == "ok"]
    if not ok:
        return {"images": 0}
    keys = ok[0]["adversarial"].keys()
    stealth = {}
    for k in ok[0]["stealth"]:
        # An image the attack left unchanged has PSNR = inf; average the finite ones and count the rest.
        values = [s["stealth"][k] for s in ok if s["stealth"].get(k) is not None and s["stealth"][k] != float("inf")]
        stealth[k] = _mean(values)
    stealth["unchanged_images"] = sum(s["stealth"]["linf"] == 0 for s in ok)
    by = {}
    for field in group_by:
        values = sorted({str(s.get("base", {}).get(field)) for s in ok})
        by[field] = {v: {"images": len(group), **{k: _mean([s["adversarial"][k] for s in group]) for k in keys}}
                     for v in values for group in [[s for s in ok if str(s.get("base", {}).get(field)) == v]]}
    return {
        "images": len(ok),
        "asr": {k: _mean([s["adversarial"][k] for s in ok]) for k in keys},
        "clean_baseline": {k: _mean([s["clean"][k] for s in ok]) for k in keys},
        **({"asr_by": by} if by else {}),
        "stealth": stealth,
        "utility": _mean_by_key([s["utility"] for s in ok if isinstance(s.get("utility"), dict)]),
        "steps_run": _mean([s["steps_run"] for s in ok]),
        "attack_seconds": max(s["attack_seconds"] for s in ok),
    }


def rescore(samples: list[dict], record: dict) -> dict:
    """Metrics of a (merged) record from its samples alone: what the leaderboard calls."""
    return summarize(samples, tuple(record["spec"].get("group_by", ())))
