"""HarmBench's two commands, Hydra apps with the lifecycle of every job command (mmsafety.cli.command):
the command line is checked before a job starts, a mistake is one line, `--help` describes the keys.

- `mmsafety-judge-agreement judge=<name> val_set=<path> [root=...]` (conf/judge_agreement.yaml): a
  judge against human labels; writes `agreement.json` and `agreement.md` in its run folder.
- `mmsafety-harmbench-judge judge=<name> completions=<file> | record=<folder> [model=<preset>]`
  (conf/harmbench_judge.yaml): label completions and compute HarmBench's ASR; `asr.json` (and, for
  `record=` alone, a run record of its own) in `<record>/judged-<judge>` or beside the completions.

`out=DIR` on either command line is another name for `hydra.run.dir` (`hydra.sweep.dir` under -m),
so command lines written for the earlier key=value parser still run. `run_agreement` and `run_score`
are the Python twins: the same key=value list, the report back as a dict.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harmbench.agreement import judge_agreement, load_val_set, reference_rows, table
from harmbench.completions import judge_completions, read_completions
from harmbench.data import VAL_SET_JSON, read_behaviors
from harmbench.rejudge import read_source, rejudge_record
from harmbench.stage import complete_record
from harmbench.synthetic import synthetic_root
from mmsafety.cli.command import JobCommand, compose, output_folder, run_command
from mmsafety.cli.job_log import job_log
from mmsafety.cli.loading import check_capabilities, load_model
from mmsafety.errors import UserError
from mmsafety.judging import JUDGES, build_judge
from mmsafety.models.capabilities import GENERATE
from mmsafety.numbers import pct_of
from mmsafety.records import atomic_write_text

AGREEMENT_CONFIG = "judge_agreement"
SCORE_CONFIG = "harmbench_judge"


def judged_folder(record, completions, judge) -> str:
    """The `${judged_folder:...}` resolver: harmbench-judge's run folder, `<record>/judged-<judge>` or
    `judged-<judge>` beside the completions file (where the earlier parser wrote)."""
    if record:
        return str(Path(str(record)) / f"judged-{judge}")
    if completions:
        return str(Path(str(completions)).parent / f"judged-{judge}")
    return f"runs/harmbench_judge/{judge}"  # neither given: validation refuses the command before a job


def _register() -> None:
    if not OmegaConf.has_resolver("judged_folder"):
        OmegaConf.register_new_resolver("judged_folder", judged_folder)


def aliased(args: list[str]) -> list[str]:
    """`out=DIR` as `hydra.run.dir=DIR` (`hydra.sweep.dir=DIR` under -m): the earlier commands' key."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    return [f"{key}={a[len('out='):]}" if a.startswith("out=") else a for a in args]


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


def _check_judge(cfg: DictConfig) -> None:
    if cfg.judge not in JUDGES.names():
        raise UserError(f"judge={cfg.judge}: no such judge; available: {', '.join(JUDGES.names())}")
    for key in ("batch_size", "max_new_tokens"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"{key}={value}: must be a whole number >= 1")


def _configured(config_name: str, argv: list[str], validate) -> tuple[DictConfig, object, Path]:
    """A Python twin's config, what validating it built, and its (checked) output folder."""
    _register()
    cfg = compose(config_name, aliased(list(argv)), with_hydra=True)
    prepared = validate(cfg)
    out = output_folder(cfg)
    if out is None:  # a folder name that needs a running Hydra job (e.g. ${hydra:...}): name one instead
        raise UserError(f"hydra.run.dir={cfg.hydra.run._get_node('dir')._value()}: cannot be resolved outside a "
                        f"command line; pass out=DIR")
    return cfg, prepared, out


def _hydra_output_folder() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


# ---- mmsafety-judge-agreement -------------------------------------------------------------------

def validate_agreement(cfg: DictConfig) -> None:
    _check_judge(cfg)
    if cfg.val_set is not None and not Path(str(cfg.val_set)).expanduser().is_file():
        raise UserError(f"val_set={cfg.val_set}: no such file; give HarmBench's multimodal_behaviors_val_set.json "
                        f"(data/classifier_val_sets/), or leave val_set out for the synthetic one")


def agreement_report(cfg: DictConfig, out: Path) -> dict:
    """Run the judge over the validation set; write agreement.json and agreement.md in `out`."""
    val_set, root = cfg.val_set, cfg.root
    if val_set is None:
        root = root or synthetic_root()
        val_set = Path(root) / VAL_SET_JSON
    entries, skipped, notes = load_val_set(val_set, root)
    judge = build_judge(judge_options(cfg))
    report = {"val_set": str(val_set), "root": str(root) if root else None, "truth": "majority of human_* labels",
              "judges": {cfg.judge: judge_agreement(judge, entries)}, "reference": reference_rows(entries),
              "entries": [e["entry"] for e in entries], "skipped": skipped, "notes": notes}
    atomic_write_text(out / "agreement.json", json.dumps(report, indent=2))
    atomic_write_text(out / "agreement.md", table(report))
    report["out"] = str(out)
    return report


def run_agreement(argv: list[str]) -> dict:
    """`mmsafety-judge-agreement ARGS...` from Python: the report, also written to its run folder."""
    cfg, _, out = _configured(AGREEMENT_CONFIG, argv, validate_agreement)
    return agreement_report(cfg, out)


def _agreement_job(cfg: DictConfig, _prepared) -> None:
    report = agreement_report(cfg, _hydra_output_folder())
    print(table(report), end="")
    for s in report["skipped"]:
        job_log(f"skipped {s['entry']}: {s['reason']}")
    print(f"agreement: {report['out']}/agreement.json")


AGREEMENT = JobCommand(AGREEMENT_CONFIG, validate_agreement, _agreement_job, record_is_job_config=False)


def judge_agreement_main() -> None:
    _register()
    run_command(AGREEMENT, aliased(sys.argv[1:]))


# ---- mmsafety-harmbench-judge -------------------------------------------------------------------

def validate_score(cfg: DictConfig) -> None:
    """The mode the keys ask for, refused in one line before any folder is written."""
    _check_judge(cfg)
    model = cfg.get("model")
    if cfg.record and model is None and not cfg.completions:
        read_source(Path(str(cfg.record)))  # a folder that is not a HarmBench attack record: one line
    elif cfg.record:
        if model is None:
            raise UserError("mmsafety-harmbench-judge record=... completions=...: give model=<conf/model preset> to "
                            "complete the saved images with, or leave out completions= to re-judge the record's own")

        check_capabilities(cfg, "harmbench", {"the judge stage (completions of the saved PNGs)": frozenset({GENERATE})})
    elif model is not None:
        raise UserError(f"model={model.name}: completes the saved PNGs of an attack record; give record=<folder> too")
    elif not cfg.completions:
        raise UserError("mmsafety-harmbench-judge: give completions=<file>, or record=<attack record folder> "
                        "(add model=<preset> to complete its saved PNGs first)")
    elif not Path(str(cfg.completions)).expanduser().is_file():
        raise UserError(f"completions={cfg.completions}: no such file; give a HarmBench completions JSON or a .jsonl")


def score_report(cfg: DictConfig, out: Path) -> dict:
    """Label the completions (re-judge the record, or complete its PNGs first) into `out`."""
    options = judge_options(cfg)
    if cfg.record and cfg.get("model") is None and not cfg.completions:  # re-judge the record's own, as a record
        return {**rejudge_record(cfg.record, build_judge(options), options, out), "skipped": []}
    completions = cfg.completions
    if cfg.record:  # the judge stage: complete the record's saved test cases first (batched)
        completions = str(complete_record(cfg.record, load_model(cfg), int(cfg.max_new_tokens), int(cfg.batch_size)))
    root = cfg.root
    if root is None:
        root = str(synthetic_root())
    behaviors = {b.id: b for b in read_behaviors(root) if b.skip_reason is None}
    report = judge_completions(build_judge(options), read_completions(completions), behaviors)
    atomic_write_text(out / "asr.json", json.dumps(report, indent=2))
    report["out"] = str(out)
    return report


def run_score(argv: list[str]) -> dict:
    """`mmsafety-harmbench-judge ARGS...` from Python: HarmBench's ASR of the labels, plus `out`."""
    cfg, _, out = _configured(SCORE_CONFIG, argv, validate_score)
    return score_report(cfg, out)


def _score_job(cfg: DictConfig, _prepared) -> None:
    report = score_report(cfg, _hydra_output_folder())
    for s in report["skipped"]:
        job_log(f"skipped {s['line']}: {s['reason']}")

    asr = pct_of(report["asr"], report.get("ci95"), unit=" %") or "-"  # 81.2 % [62.5, 93.8], as every summary
    print(f"{report['judge']}: ASR {asr} over {report['behaviors']} behaviours "
          f"({report['test_cases']} completions, {report['unparsed']} unparsed); {report['out']}/asr.json")


SCORE = JobCommand(SCORE_CONFIG, validate_score, _score_job, record_is_job_config=False)


def score_main() -> None:
    _register()
    run_command(SCORE, aliased(sys.argv[1:]))
