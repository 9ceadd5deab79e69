"""Re-judge a HarmBench attack record with another judge, as a run record of its own.

`mmsafety-harmbench-judge judge=<name> record=<attack folder>` labels the completions the attack job
stored (each sample's clean and adversarial `outputs`) with the chosen judge and writes, in
`<attack folder>/judged-<judge>/` by default, a record of the attack workload whose spec is the
source's with `judge` replaced, `stage: rejudge` and `source_run`: a leaderboard row of the same
model and method under that judge. The saved PNGs the completions came from are copied next to it
(hard links where the file system allows), so every path in its samples stays inside its folder,
as the record schema requires. The completions themselves are not regenerated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image

from harmbench.leaderboard import KIND, rescore
from mmsafety.errors import UserError
from mmsafety.judging import JudgeInput
from mmsafety.record_kinds import schema_of
from mmsafety.record_models import answered
from mmsafety.record_schema import record_problems, split_samples
from mmsafety.records import RunRecord, atomic_write_text, read_samples
from mmsafety.safe_json import loads_object
from mmsafety.workload import WORKLOADS

WHICH = ("clean", "adversarial")
PNG_OF = {"clean": "clean_png", "adversarial": "adversarial_png"}


def read_source(source: Path) -> tuple[dict, list[dict]]:
    """The source attack record and its finished samples; one line naming the problem otherwise."""
    try:
        record = loads_object((source / "record.json").read_bytes())
    except (OSError, ValueError) as e:
        raise UserError(f"record={source}: no readable record.json ({e}); point it at a folder mmsafety-attack wrote") from None
    if record_problems(record, schema_of) or record.get("kind") != KIND or (record.get("spec") or {}).get("case") != "harmbench_behaviors":
        raise UserError(f"record={source}: not a HarmBench attack record (mmsafety-attack case=harmbench_behaviors)")
    samples, _ = split_samples(read_samples(source / "samples.jsonl"), schema_of(KIND))
    samples = [s for s in samples if answered(s)]
    if not samples:
        raise UserError(f"record={source}: no finished test cases in samples.jsonl; let the attack job finish first")
    return record, samples


def _copy_png(source: Path, out: Path, relative: str) -> None:
    src, dst = (source / relative).resolve(), out / relative
    if not src.is_relative_to(source.resolve()):
        raise UserError(f"record={source}: a sample names an image outside the record folder ({relative})")
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _image(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:
        return None


def rejudge_record(source_dir: str | Path, judge, judge_options: dict, out_dir: str | Path | None = None) -> dict:
    """Label the source record's stored completions with `judge` (built from `judge_options`, which go
    into the new record's spec) and write the new record and `asr.json` in `out_dir`. Returns HarmBench's ASR of the
    new labels (harmbench.leaderboard.rescore) plus `out`."""
    source = Path(source_dir)
    record, samples = read_source(source)
    out = Path(out_dir) if out_dir else source / f"judged-{judge_options['name']}"
    config = {**record.get("config", {}), "rejudge": {"source_run": str(source.resolve()), "judge": judge_options}}
    if isinstance(config.get("case"), dict):
        config["case"] = {**config["case"], "judge": judge_options}
    run = RunRecord.open(out, KIND, config, seeds=record.get("seeds"), schema=schema_of(KIND))
    try:
        run.update(model=record.get("model", {}),
                   spec={**record["spec"], "judge": judge_options, "stage": "rejudge", "source_run": str(source.resolve())})
        done = run.done_keys(("image",))
        todo = [s for s in samples if (s["image"],) not in done]
        items, where = [], []
        for i, s in enumerate(todo):
            base = s.get("base") or {}
            for which in WHICH:
                _copy_png(source, out, s[PNG_OF[which]])
                image = _image(out / s[PNG_OF[which]]) if judge_options["name"] == "vlm_judge" else None
                for j, row in enumerate((s.get("outputs") or {}).get(which) or []):
                    items.append(JudgeInput(str(base.get("behavior", "")), str(row.get("generation", "")),
                                            str(base.get("context", "")), image))
                    where.append((i, which, j))
        labels = judge.labels(items) if items else []
        relabelled = [json.loads(json.dumps(s)) for s in todo]  # deep copies: the source samples stay as read
        for (i, which, j), label in zip(where, labels):
            relabelled[i]["outputs"][which][j].update(label=label, judge=judge_options["name"])
        for s in relabelled:
            for which in WHICH:
                rows = (s.get("outputs") or {}).get(which) or []
                s[which] = {"harmful": sum(r["label"] == 1 for r in rows) / max(1, len(rows)),
                            "unparsed": sum(r["label"] == -1 for r in rows) / max(1, len(rows))}
            run.add_sample(s)
        run.update(metrics=WORKLOADS.get(KIND).rescore(run.samples, run.data))
        run.write("completed")
    finally:
        run.close()
    scores = rescore(run.samples)
    report = {**scores["harmbench"], "judge": judge_options["name"], "start_image": scores["clean"]}
    atomic_write_text(out / "asr.json", json.dumps(report, indent=2))  # as for a completions file
    return {**report, "out": str(out)}
