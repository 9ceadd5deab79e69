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
from pathlib import Path

import torch
from hydra.utils import instantiate
from PIL import Image
from tqdm import tqdm

from mmsafety.attack_case import AttackCase
from mmsafety.config import pixel_amount, plain
from mmsafety.errors import ConfigError
from mmsafety.models.base import VLMAdapter
from mmsafety.models.pixels import pil_to_pixels, pixels_to_pil
from mmsafety.records import RunRecord, atomic_write_bytes
from visual_attacks.pgd import OPTIMIZERS, Checkpoint, PGDConfig, pgd
from visual_attacks.stealth import lpips_available, lpips_note, stealth_metrics


def pgd_config(attack) -> PGDConfig:
    OPTIMIZERS.get(attack.optimizer)  # an unknown name: one line that lists the registered ones
    return PGDConfig(
        norm=plain(attack.norm),
        eps=pixel_amount("attack.eps", attack.eps), step_size=pixel_amount("attack.step_size", attack.step_size),
        steps=attack.steps, random_start=attack.random_start, optimizer=attack.optimizer,
        keep_best=attack.keep_best, select_every=attack.select_every, early_stop_loss=attack.early_stop_loss,
        check_every=attack.early_stop_every, quantize=attack.quantize, seed=attack.seed,
    )


ATTACK_STATE = "attack_state.pt"


def attack_checkpoint(out_dir: Path, attack, objective) -> Checkpoint | None:
    """The attack state saved every `attack.checkpoint_every` steps in the run folder, so a killed or
    preempted job resumes mid-attack instead of from step 0 (0: off)."""
    if not attack.checkpoint_every:
        return None
    if hasattr(objective, "state_dict"):
        return Checkpoint(out_dir / ATTACK_STATE, attack.checkpoint_every, objective.state_dict, objective.load_state_dict)
    return Checkpoint(out_dir / ATTACK_STATE, attack.checkpoint_every)


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
        # A resumed run attacks the whole batch again, from its last saved attack state when there
        # is one (attack.checkpoint_every), and writes only the missing samples: the images share one
        # batched PGD run, so the same batch gives bit-identical images on the CPU, while a smaller
        # batch could round differently.
        # On the 8-bit grid from the start: the clean PNG is then exactly the attack's x0, and an
        # eps that is a multiple of 1/255 still holds after the adversarial image is rounded.
        clean = adapter.to_input_pixels([base.image for base in bases]).mul(255).round().div(255)
        objective = case.objective(adapter, bases, clean, cfg.attack)
        bar = tqdm(total=pcfg.steps, unit="step", desc=f"{cfg.attack.name} eps={cfg.attack.eps}", dynamic_ncols=True, mininterval=1.0)

        def on_step(step, loss, best):
            bar.update(1)
            if step % 10 == 0:  # one host sync per 10 steps, for the progress bar only
                bar.set_postfix(loss=f"{loss.mean().item():.3f}", best=f"{best.mean().item():.3f}")

        checks = []

        def held_out_check(step, best_x):
            """The best images so far, rounded to 8 bits as a PNG would store them, judged like the final ones."""
            rates = [case.judge(adapter, pixels_to_pil(x.cpu()), bases[i]).rates for i, x in enumerate(best_x)]
            mean = {k: sum(r[k] for r in rates) / len(rates) for k in rates[0]}
            checks.append({"step": step, "rates": mean})
            tqdm.write(f"step {step}: held-out {case.headline} {mean[case.headline]:.1%}", file=sys.stderr)

        start = time.perf_counter()
        try:
            result = pgd(objective, clean.to(adapter.device), pcfg, on_step,
                         monitor=held_out_check, monitor_every=cfg.attack.check_every,
                         select=getattr(objective, "validation", None),  # universal objectives: a fixed validation batch
                         checkpoint=attack_checkpoint(out_dir, cfg.attack, objective))
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        curve = write_loss_curve(result.losses.cpu(), out_dir)
        for i in sorted(missing):
            clean_png = save_png(clean[i], out_dir / "images")
            adv_png = save_png(result.pixels[i].cpu(), out_dir / "images")
            clean_img, adv_img = reload_png(clean_png), reload_png(adv_png)
            clean_j, adv_j = case.judge(adapter, clean_img, bases[i]), case.judge(adapter, adv_img, bases[i])
            stealth = stealth_metrics(pil_to_pixels(clean_img)[None], pil_to_pixels(adv_img)[None])[0]
            record.add_sample({
                "image": i, "key": bases[i].key, "status": "ok", "clean_png": str(clean_png.relative_to(out_dir)),
                "adversarial_png": str(adv_png.relative_to(out_dir)), "best_loss": result.best_loss[i].item(),
                "steps_run": result.steps_run, "attack_seconds": seconds, "stealth": stealth,
                "clean": clean_j.rates, "adversarial": adv_j.rates, "utility": case.utility(clean_j, adv_j, bases[i]),
                "outputs": {"clean": clean_j.rows, "adversarial": adv_j.rows}, "base": bases[i].info,
            })
            record.checkpoint()
        record.update(artifacts={"loss_curve": curve}, held_out_checks=checks)
        (out_dir / ATTACK_STATE).unlink(missing_ok=True)  # every sample is written: nothing left to resume
        log(f"attack: {result.steps_run} steps in {seconds:.1f}s ({seconds / max(1, result.steps_run) * 1000:.0f} ms/step)")
    return summarize(record.samples, case.group_by)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_by_key(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """Per key, the mean over the rows that have it (a key may be reported for some samples only)."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: _mean([r[k] for r in rows if k in r]) for k in keys} if rows else None


def _count_by_key(rows: list[dict[str, float]]) -> dict[str, int] | None:
    """Per utility key, how many samples report it (e.g. the memes the clean model flags)."""
    return {k: sum(k in r for r in rows) for k in dict.fromkeys(k for r in rows for k in r)} if rows else None


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
        "utility_counts": _count_by_key([s["utility"] for s in ok if isinstance(s.get("utility"), dict)]),
        "steps_run": _mean([s["steps_run"] for s in ok]),
        "attack_seconds": max(s["attack_seconds"] for s in ok),
    }


def rescore(samples: list[dict], record: dict) -> dict:
    """Metrics of a (merged) record from its samples alone: what the leaderboard calls."""
    return summarize(samples, tuple(record["spec"].get("group_by", ())))
