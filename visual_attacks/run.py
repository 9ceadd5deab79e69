"""One attack job: craft one image per base image, save it as PNG, judge it as deployed.

Every success rate comes from the saved 8-bit PNG, reloaded from disk and passed through
the model's own (non-differentiable) processor, on held-out prompts the attack never saw.
The clean image's rates on the same prompts are the baseline in every report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from mmsafety.config import pixel_amount, plain
from mmsafety.models.base import VLMAdapter
from mmsafety.models.pixels import pil_to_pixels, pixels_to_pil
from mmsafety.records import RunRecord, atomic_write_bytes
from mmsafety.synthetic import prompts as prompt_sets
from mmsafety.synthetic import scenes
from visual_attacks.objectives import CleanAnswers, PromptSampler, target_string, tool_misuse
from visual_attacks.pgd import PGDConfig, pgd
from visual_attacks.stealth import LPIPS_NOTE, stealth_metrics
from visual_attacks.targets import ToolTarget, load_target


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


def base_scenes(n: int, seed: int) -> list[scenes.Scene]:
    """Held-out benign scenes (no envelope): what the organism answers with a colour, no tool call."""
    rng = random.Random(f"attack-bases/{seed}")
    return [scenes.make_scene(rng, envelope=False) for _ in range(n)]


def judge_outputs(adapter: VLMAdapter, image: Image.Image, prompts: list[str], target: ToolTarget,
                  batch_size: int = 16, max_new_tokens: int = 96) -> list[dict]:
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        outs += adapter.generate([image] * len(chunk), chunk, max_new_tokens=max_new_tokens)
    return [{"prompt": p, "output": o, **target.judge(o, p).as_dict()} for p, o in zip(prompts, outs)]


def rates(rows: list[dict]) -> dict[str, float]:
    keys = [k for k in ("exact", "syntax", "argument", "leaked") if rows and k in rows[0]]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def write_loss_curve(losses: torch.Tensor, out_dir: Path) -> dict[str, str]:
    """CSV (step, loss per image, mean) and a PNG plot of the attack's loss."""
    csv_path = out_dir / "loss_curve.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [f"image_{i}" for i in range(losses.shape[1])] + ["mean"])
        for step, row in enumerate(losses.tolist()):
            w.writerow([step] + [f"{v:.5f}" for v in row] + [f"{sum(row) / len(row):.5f}"])
    files = {"csv": csv_path.name}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return files
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(losses.numpy(), color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(losses.mean(1).numpy(), color="tab:red", lw=1.8, label="mean over images")
    ax.set(xlabel="PGD step", ylabel="target loss (NLL)", yscale="log", title="Attack loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curve.png")
    plt.close(fig)
    files["png"] = "loss_curve.png"
    return files


def make_objective(attack, adapter: VLMAdapter, target: ToolTarget, sampler: PromptSampler, clean: torch.Tensor):
    if attack.objective == "target_string":
        return target_string(adapter, target, sampler)
    return tool_misuse(adapter, target, sampler, CleanAnswers(adapter, clean), attack.response_weight, attack.l2_weight)


def run_attack(cfg, adapter: VLMAdapter, record: RunRecord, log=print) -> dict:
    target = load_target(cfg.target)
    pcfg = pgd_config(cfg.attack)
    out_dir = record.out_dir
    bases = base_scenes(cfg.images, cfg.seed)
    heldout = prompt_sets.benign_prompts("heldout")
    heldout = random.Random(f"heldout/{cfg.seed}").sample(heldout, min(cfg.heldout_prompts, len(heldout)))
    sampler = PromptSampler(prompt_sets.benign_prompts("train"), cfg.attack.prompts_per_step, cfg.attack.seed)
    record.update(
        model={"name": cfg.model.name, "id": adapter.model_id, "adapter": adapter.name, "weights_sha256": adapter.weights_sha256},
        spec={"workload": "visual_attack", "attack": cfg.attack.name, "objective": cfg.attack.objective, "target": target.name,
              "target_text": target.text, "norm": pcfg.norm, "eps": pcfg.eps, "step_size": pcfg.step_size,
              "steps": pcfg.steps, "prompts_per_step": sampler.per_step, "images": len(bases),
              "heldout_prompts": len(heldout), "train_prompts": len(sampler.prompts), "notes": [LPIPS_NOTE]},
    )
    done = record.done_keys(("image",))
    todo = [i for i in range(len(bases)) if (i,) not in done]
    if todo:
        # On the 8-bit grid from the start: the clean PNG is then exactly the attack's x0, and an
        # eps that is a multiple of 1/255 still holds after the adversarial image is rounded.
        clean = adapter.to_input_pixels([bases[i].image for i in todo]).mul(255).round().div(255)
        objective = make_objective(cfg.attack, adapter, target, sampler, clean)
        bar = tqdm(total=pcfg.steps, unit="step", desc=f"{cfg.attack.name} eps={cfg.attack.eps}", dynamic_ncols=True, mininterval=1.0)

        def on_step(step, loss, best):
            bar.update(1)
            if step % 10 == 0:  # one host sync per 10 steps, for the progress bar only
                bar.set_postfix(loss=f"{loss.mean().item():.3f}", best=f"{best.mean().item():.3f}")

        start = time.perf_counter()
        try:
            result = pgd(objective, clean.to(adapter.device), pcfg, on_step)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        curve = write_loss_curve(result.losses.cpu(), out_dir)
        for j, i in enumerate(todo):
            clean_png = save_png(clean[j], out_dir / "images")
            adv_png = save_png(result.pixels[j].cpu(), out_dir / "images")
            clean_img, adv_img = reload_png(clean_png), reload_png(adv_png)
            clean_rows = judge_outputs(adapter, clean_img, heldout, target)
            adv_rows = judge_outputs(adapter, adv_img, heldout, target)
            stealth = stealth_metrics(pil_to_pixels(clean_img)[None], pil_to_pixels(adv_img)[None])[0]
            utility = sum(a["output"].split("\n")[0].strip() == c["output"].split("\n")[0].strip()
                          for a, c in zip(adv_rows, clean_rows)) / len(heldout)
            record.add_sample({
                "image": i, "status": "ok", "clean_png": str(clean_png.relative_to(out_dir)),
                "adversarial_png": str(adv_png.relative_to(out_dir)), "best_loss": result.best_loss[j].item(),
                "steps_run": result.steps_run, "attack_seconds": seconds, "stealth": stealth,
                "clean": rates(clean_rows), "adversarial": rates(adv_rows), "utility_first_line_kept": utility,
                "outputs": {"clean": clean_rows, "adversarial": adv_rows},
                "scene": {"colour": bases[i].colour, "shape": bases[i].shape},
            })
            record.checkpoint()
        record.update(artifacts={"loss_curve": curve})
        log(f"attack: {result.steps_run} steps in {seconds:.1f}s ({seconds / max(1, result.steps_run) * 1000:.0f} ms/step)")
    return summarize(record.samples)


def summarize(samples: list[dict]) -> dict:
    ok = [s for s in samples if s.get("status") == "ok"]
    if not ok:
        return {"images": 0}
    mean = lambda xs: sum(xs) / len(xs)
    keys = ok[0]["adversarial"].keys()
    return {
        "images": len(ok),
        "asr": {k: mean([s["adversarial"][k] for s in ok]) for k in keys},
        "clean_baseline": {k: mean([s["clean"][k] for s in ok]) for k in keys},
        "stealth": {k: mean([s["stealth"][k] for s in ok]) for k in ("linf", "l2", "psnr", "ssim")},
        "utility_first_line_kept": mean([s["utility_first_line_kept"] for s in ok]),
        "steps_run": mean([s["steps_run"] for s in ok]),
        "attack_seconds": max(s["attack_seconds"] for s in ok),
    }
