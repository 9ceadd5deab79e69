"""Judge stage: reload saved PNGs and judge them with any model that has what the case's judge needs.

Every success rate comes from the saved 8-bit PNG, reloaded from disk and passed through the
judging model's own (non-differentiable) processor; the clean image's rates under the same judge
are the baseline. `judge_saved_attack` judges another run's PNGs on another model (transfer).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from PIL import Image

from mmsafety.attack_case import AttackBase, AttackCase, build_case
from mmsafety.cli.lifecycle import note_invocation
from mmsafety.errors import UserError
from mmsafety.models.base import ModelAdapter
from mmsafety.models.capabilities import require
from mmsafety.models.pixels import pil_to_pixels
from mmsafety.paths import inside
from mmsafety.preemption import SaveOnSignal
from mmsafety.records import RunRecord, atomic_write_bytes, read_samples
from mmsafety.record_models import answered
from mmsafety.safe_json import loads_object
from visual_attacks.deploy import PNG, Deploy, decode
from visual_attacks.png_names import read_verified_png
from visual_attacks.stealth import stealth_metrics
from visual_attacks.summary import summarize


def reload_png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def reload_deployed(path: Path, deploy: Deploy) -> tuple[Image.Image, Image.Image]:
    """A saved PNG as stored and as the victim receives it after `deploy`; refused in one line when
    its bytes no longer match the sha256 in its name (modified since the attack saved it)."""
    data = read_verified_png(path)
    saved = decode(data)
    return saved, (saved if not deploy.steps else decode(deploy.apply(data)))


def judge_pair(case: AttackCase, adapter: ModelAdapter, base: AttackBase, clean_png: Path, adversarial_png: Path,
               deploy: Deploy = PNG) -> dict:
    """The clean and the adversarial PNG of one base, reloaded, passed through `deploy` (both: the
    clean rates are the victim's baseline under the same transform) and judged: stealth (from the
    saved files, before the transform), the judge's rates for each, what survives of the benign
    behaviour, the judge's rows."""
    (clean_img, clean_sent), (adv_img, adv_sent) = reload_deployed(clean_png, deploy), reload_deployed(adversarial_png, deploy)
    clean_j, adv_j = case.judge(adapter, clean_sent, base), case.judge(adapter, adv_sent, base)
    return {"stealth": stealth_metrics(pil_to_pixels(clean_img)[None], pil_to_pixels(adv_img)[None])[0],
            "clean": clean_j.rates, "adversarial": adv_j.rates, "utility": case.utility(clean_j, adv_j, base),
            "outputs": {"clean": clean_j.rows, "adversarial": adv_j.rows}}


def read_source_run(source_run_dir: str | Path) -> tuple[Path, dict, list[dict]]:
    """An attack run folder's path (resolved), its record and its crafted samples (status ok);
    refused in one line when the folder is not an attack run or saved no PNGs."""
    source = Path(source_run_dir).resolve()
    try:
        source_record = loads_object((source / "record.json").read_bytes())
        case_cfg = source_record["config"]["case"]
        if source_record.get("kind") != "visual_attack" or not isinstance(case_cfg, dict):
            raise KeyError(f"its record is of kind {str(source_record.get('kind'))[:40]!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{source}: not an attack run folder with a readable record.json ({e}); "
                        f"point it at the folder mmsafety-attack wrote") from None
    crafted = [s for s in read_samples(source / "samples.jsonl") if answered(s)
               and isinstance(s.get("clean_png"), str) and isinstance(s.get("adversarial_png"), str)]
    if not crafted:
        raise UserError(f"{source}: this attack run saved no PNGs (no finished image in samples.jsonl); "
                        f"rerun mmsafety-attack there until it saves some")
    return source, source_record, crafted


def saved_pngs(source: Path, sample: dict) -> tuple[Path, Path]:
    """A crafted sample's clean and adversarial PNGs (relative to the run folder, as the attack writes
    them); a name that leads out of the folder is refused, not read."""
    found = []
    for role in ("clean_png", "adversarial_png"):
        path = inside(source, sample.get(role))
        if path is None:
            raise UserError(f"{source}: image {sample.get('image')}'s {role} {sample.get(role)!r} is not a file inside "
                            f"the run folder; samples.jsonl was edited or is not an attack run's")
        found.append(path)
    return found[0], found[1]


def keep_copy(png: Path, out_dir: Path) -> Path:
    """The verified bytes of a saved PNG, written under `out_dir/images/` with the same name (kept if there)."""
    copy = out_dir / "images" / png.name
    if not copy.exists():
        atomic_write_bytes(copy, read_verified_png(png))
    return copy


def judge_saved_attack(source_run_dir: str | Path, adapter: ModelAdapter, record: RunRecord | None = None,
                       log=print, model_name: str | None = None, deploy: Deploy = PNG) -> dict:
    """Judge the PNGs a craft run saved in `source_run_dir` with `adapter` (any model with the case's
    `judge_needs`; the crafting model or another), each after `deploy` (default: the saved bytes).
    The case is rebuilt from the source record's config, so the held-out checks are the source run's;
    each sample's base comes from the sample itself, so the original images are not needed. A PNG
    whose bytes no longer match the sha256 in its name is refused (UserError), not judged.

    With `record`, one sample per judged image goes into it (the same fields as an attack sample, plus
    `source_run`; the judged PNGs are copied into the record's `images/` under their own names, since a
    record's files stay in its folder; `steps_run` / `attack_seconds` are the craft run's), and a
    resumed record skips images it has; `model_name` is the judging model's display name there (default:
    its adapter's name). Without a spec in `record` yet, its spec is the source's with `stage: judge`.
    Returns the metrics (visual_attacks.summary.summarize).
    """

    source, source_record, crafted = read_source_run(source_run_dir)
    case_cfg = source_record["config"]["case"]
    case = build_case(case_cfg)
    require(adapter, case.judge_needs, f"judging case={case_cfg.get('name')}", model_name or adapter.name)
    if record is not None:
        record.update(model={"name": model_name or adapter.name, "id": adapter.model_id, "adapter": adapter.name,
                             "weights_sha256": adapter.weights_sha256})
        if not record.data.get("spec"):
            record.update(spec={**{k: v for k, v in source_record.get("spec", {}).items() if k not in ("notes",)},
                                "stage": "judge", "source_run": str(source), "deploy": deploy.spec(),
                                "source_model": source_record.get("model", {})})
    done = record.done_keys(("image",)) if record is not None else set()
    samples = []

    def stop_here() -> None:  # every image judged so far is in samples.jsonl: the requeued job goes on after them
        note_invocation(record, adapter, "partial")
        record.write()
        log(f"{held.held}: stopping after {len(record.samples)} of {len(crafted)} judged images (all written); "
            f"the same run resumes from there")

    # With a record, a cluster's warning (SIGUSR2) or preemption (SIGTERM) is held to the next image
    # boundary, so the image being judged is written, not judged again (mmsafety.preemption).
    with SaveOnSignal() if record is not None else contextlib.nullcontext() as held:
        for s in crafted:
            if held is not None:
                held.stop_here(stop_here)
            if (s["image"],) in done:
                continue
            base = AttackBase(s["key"], None, s.get("base", {}))
            pngs = saved_pngs(source, s)
            if record is not None:  # the judged files travel with the record (a record's PNGs stay in its folder)
                pngs = tuple(keep_copy(png, record.out_dir) for png in pngs)
            judged = judge_pair(case, adapter, base, *pngs, deploy)
            clean_png, adv_png = (str(p.relative_to(record.out_dir)) if record is not None else str(p) for p in pngs)
            sample = {"image": s["image"], "key": s["key"], "status": "ok", "source_run": str(source),
                      "clean_png": clean_png, "adversarial_png": adv_png, "best_loss": s.get("best_loss"),
                      "steps_run": s.get("steps_run"), "attack_seconds": s.get("attack_seconds"),
                      # the craft's budget and winner, so the judged record's summary keeps budget_saved / won_by
                      **{k: s[k] for k in ("steps_budget", "attack_won") if k in s},
                      **judged, "base": s.get("base", {})}
            samples.append(sample)
            if record is not None:
                record.add_sample(sample)
                record.checkpoint()
    log(f"judged {len(samples)} crafted image(s) from {source} with {adapter.model_id} (deploy={deploy.name})")
    return summarize(record.samples if record is not None else samples, tuple(case.group_by))
