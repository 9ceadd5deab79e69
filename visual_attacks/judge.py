"""Judge stage: reload saved PNGs and judge them with any model that has what the case's judge needs.

Every success rate comes from the saved 8-bit PNG, reloaded from disk and passed through the
judging model's own (non-differentiable) processor; the clean image's rates under the same judge
are the baseline. `judge_saved_attack` judges another run's PNGs on another model (transfer).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mmsafety.attack_case import AttackBase, AttackCase, build_case
from mmsafety.errors import UserError
from mmsafety.models.base import ModelAdapter
from mmsafety.models.capabilities import require
from mmsafety.models.pixels import pil_to_pixels
from mmsafety.records import RunRecord, read_samples
from visual_attacks.stealth import stealth_metrics


def reload_png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def judge_pair(case: AttackCase, adapter: ModelAdapter, base: AttackBase, clean_png: Path, adversarial_png: Path) -> dict:
    """The clean and the adversarial PNG of one base, reloaded and judged: stealth (from the files
    alone), the judge's rates for each, what survives of the benign behaviour, the judge's rows."""
    clean_img, adv_img = reload_png(clean_png), reload_png(adversarial_png)
    clean_j, adv_j = case.judge(adapter, clean_img, base), case.judge(adapter, adv_img, base)
    return {"stealth": stealth_metrics(pil_to_pixels(clean_img)[None], pil_to_pixels(adv_img)[None])[0],
            "clean": clean_j.rates, "adversarial": adv_j.rates, "utility": case.utility(clean_j, adv_j, base),
            "outputs": {"clean": clean_j.rows, "adversarial": adv_j.rows}}


def judge_saved_attack(source_run_dir: str | Path, adapter: ModelAdapter, record: RunRecord | None = None,
                       log=print, model_name: str | None = None) -> dict:
    """Judge the PNGs a craft run saved in `source_run_dir` with `adapter` (any model with the case's
    `judge_needs`; the crafting model or another). The case is rebuilt from the source record's config;
    each sample's base comes from the sample itself, so the original images are not needed.

    With `record`, one sample per judged image goes into it (the same fields as an attack sample, plus
    `source_run`; PNG paths are absolute; `steps_run` / `attack_seconds` are the craft run's), and a
    resumed record skips images it has; `model_name` is the judging model's display name there (default:
    its adapter's name). Returns the metrics (visual_attacks.run.summarize).
    """
    from visual_attacks.run import summarize

    source = Path(source_run_dir)
    try:
        source_record = json.loads((source / "record.json").read_text())
        case_cfg = source_record["config"]["case"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{source}: not an attack run folder with a readable record.json ({e}); "
                        f"point it at the folder mmsafety-attack wrote") from None
    case = build_case(case_cfg)
    require(adapter, case.judge_needs, f"judging case={case_cfg.get('name')}", model_name or adapter.name)
    crafted = [s for s in read_samples(source / "samples.jsonl") if s.get("status") == "ok"]
    if record is not None:
        record.update(
            model={"name": model_name or adapter.name, "id": adapter.model_id, "adapter": adapter.name,
                   "weights_sha256": adapter.weights_sha256},
            spec={**{k: v for k, v in source_record.get("spec", {}).items() if k not in ("notes",)},
                  "stage": "judge", "source_run": str(source.resolve()),
                  "source_model": source_record.get("model", {})})
    done = record.done_keys(("image",)) if record is not None else set()
    samples = []
    for s in crafted:
        if (s["image"],) in done:
            continue
        base = AttackBase(s["key"], None, s.get("base", {}))
        clean_png, adv_png = (source / s["clean_png"]).resolve(), (source / s["adversarial_png"]).resolve()
        sample = {"image": s["image"], "key": s["key"], "status": "ok", "source_run": str(source.resolve()),
                  "clean_png": str(clean_png), "adversarial_png": str(adv_png), "best_loss": s.get("best_loss"),
                  "steps_run": s.get("steps_run"), "attack_seconds": s.get("attack_seconds"),
                  **judge_pair(case, adapter, base, clean_png, adv_png), "base": s.get("base", {})}
        samples.append(sample)
        if record is not None:
            record.add_sample(sample)
            record.checkpoint()
    log(f"judged {len(samples)} crafted image(s) from {source} with {adapter.model_id}")
    return summarize(record.samples if record is not None else samples, tuple(case.group_by))
