"""`mmsafety-judge-agreement judge=<name> val_set=<path>`: a judge against human labels.

Options (key=value): `judge=harmbench_cls|refusal_substring|vlm_judge`, `val_set=` HarmBench's
classifier validation set (default: the synthetic one), `root=` a HarmBench clone for the
behaviour text and redacted image descriptions, `judge_model=` a builder name or
`judge_model_path=` a checkpoint folder / hub id (harmbench_cls default: the harmbench_judge
organism; vlm_judge also takes `judge_adapter=`), `batch_size=`, `out=` (default
runs/judge_agreement/<judge>). Writes `agreement.json` and `agreement.md` there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mmsafety.errors import UserError
from mmsafety.records import atomic_write_text

DEFAULTS = {"judge": "harmbench_cls", "val_set": None, "root": None, "judge_model": None, "judge_model_path": None,
            "judge_adapter": "llava", "batch_size": 8, "out": None}


def judge_options(cfg) -> dict:
    options = {"name": cfg.judge, "batch_size": int(cfg.batch_size)}
    if cfg.judge in ("harmbench_cls", "vlm_judge"):
        if cfg.judge_model_path:
            options["model"] = {"name_or_path": str(cfg.judge_model_path)}
        else:
            options["model"] = {"builder": cfg.judge_model or ("harmbench_judge" if cfg.judge == "harmbench_cls" else "harmbench_victim")}
        if cfg.judge == "vlm_judge":
            options["model"]["adapter"] = cfg.judge_adapter
    return options


def parse(argv: list[str]):
    unknown = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] not in DEFAULTS]
    if unknown or any("=" not in a for a in argv):
        raise UserError(f"mmsafety-judge-agreement: unknown or malformed option(s) {', '.join(unknown or argv)}; "
                        f"use key=value with keys {', '.join(DEFAULTS)}")
    return OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))


def run_agreement(argv: list[str]) -> dict:
    from harmbench.agreement import judge_agreement, load_val_set, reference_rows, table
    from harmbench.judges import build_judge

    cfg = parse(argv)
    val_set, root = cfg.val_set, cfg.root
    if val_set is None:
        from harmbench.data import VAL_SET_JSON
        from harmbench.synthetic import synthetic_root

        root = root or synthetic_root()
        val_set = Path(root) / VAL_SET_JSON
    entries, skipped, notes = load_val_set(val_set, root)
    judge = build_judge(judge_options(cfg))
    report = {"val_set": str(val_set), "root": str(root) if root else None, "truth": "majority of human_* labels",
              "judges": {cfg.judge: judge_agreement(judge, entries)}, "reference": reference_rows(entries),
              "entries": [e["entry"] for e in entries], "skipped": skipped, "notes": notes}
    out = Path(cfg.out or Path("runs") / "judge_agreement" / cfg.judge)
    atomic_write_text(out / "agreement.json", json.dumps(report, indent=2))
    atomic_write_text(out / "agreement.md", table(report))
    report["out"] = str(out)
    return report


def judge_agreement_main() -> None:
    try:
        report = run_agreement(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from harmbench.agreement import table

    print(table(report), end="")
    for s in report["skipped"]:
        print(f"skipped {s['entry']}: {s['reason']}", file=sys.stderr)
    print(f"agreement: {report['out']}/agreement.json")


SCORE_DEFAULTS = {**DEFAULTS, "completions": None, "record": None, "model": None, "max_new_tokens": 512}
SCORE_DEFAULTS.pop("val_set")


def run_score(argv: list[str]) -> dict:
    """`mmsafety-harmbench-judge judge=<name> completions=<file> [root=...]`: label a completions
    file (HarmBench JSON, JSON lines, or an attack record's samples.jsonl) and compute ASR. With
    `record=<folder>` alone it re-judges the completions stored in that attack record and writes a
    record of its own (harmbench.rejudge: a leaderboard row under this judge) in
    <folder>/judged-<judge>. With `record=<folder> model=<preset>` it first completes the record's
    saved PNGs in batches (`batch_size`, `max_new_tokens`) into <folder>/completions.jsonl."""
    from harmbench.completions import judge_completions, read_completions
    from harmbench.data import read_behaviors
    from harmbench.judges import build_judge

    unknown = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] not in SCORE_DEFAULTS]
    if unknown or any("=" not in a for a in argv):
        raise UserError(f"mmsafety-harmbench-judge: unknown or malformed option(s) {', '.join(unknown or argv)}; "
                        f"use key=value with keys {', '.join(SCORE_DEFAULTS)}")
    cfg = OmegaConf.merge(OmegaConf.create(SCORE_DEFAULTS), OmegaConf.from_dotlist(argv))
    if cfg.record and not cfg.model and not cfg.completions:  # re-judge the record's own completions, as a record
        from harmbench.rejudge import rejudge_record

        options = judge_options(cfg)
        return {**rejudge_record(cfg.record, build_judge(options), options, cfg.out), "skipped": []}
    if cfg.record:  # the judge stage: complete the record's saved test cases first (batched)
        if not cfg.model:
            raise UserError("mmsafety-harmbench-judge record=... completions=...: give model=<conf/model preset> to "
                            "complete the saved images with, or leave out completions= to re-judge the record's own")
        from harmbench.stage import complete_record
        from mmsafety.app import load_preset

        cfg.completions = str(complete_record(cfg.record, load_preset(cfg.model), int(cfg.max_new_tokens), int(cfg.batch_size)))
    if not cfg.completions:
        raise UserError("mmsafety-harmbench-judge: give completions=<file>, or record=<attack record folder> model=<preset>")
    if cfg.root is None:
        from harmbench.synthetic import synthetic_root

        cfg.root = str(synthetic_root())
    behaviors = {b.id: b for b in read_behaviors(cfg.root) if b.skip_reason is None}
    report = judge_completions(build_judge(judge_options(cfg)), read_completions(cfg.completions), behaviors)
    out = Path(cfg.out or Path(cfg.completions).parent / f"judged-{cfg.judge}")
    atomic_write_text(out / "asr.json", json.dumps(report, indent=2))
    report["out"] = str(out)
    return report


def score_main() -> None:
    try:
        report = run_score(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for s in report["skipped"]:
        print(f"skipped {s['line']}: {s['reason']}", file=sys.stderr)
    print(f"{report['judge']}: ASR {report['asr']} over {report['behaviors']} behaviours "
          f"({report['test_cases']} completions, {report['unparsed']} unparsed); {report['out']}/asr.json")
