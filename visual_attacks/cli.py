"""`mmsafety-attack`: one visual attack per job (Hydra; `-m attack.eps=8/255,16/255` sweeps)."""

from __future__ import annotations

import json
import sys

from omegaconf import DictConfig

from mmsafety.app import compose_config, run_app, run_job
from mmsafety.config import validate_attack, validate_common


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked without a model, so a sweep fails before its first job."""
    from visual_attacks.run import build_case, pgd_config

    validate_common(cfg)
    validate_attack(cfg.attack)
    pgd_config(cfg.attack)  # an unknown attack.optimizer fails here, in one line
    build_case(cfg)  # builds the case's targets and prompt sets; cheap (no images are drawn yet)


def attack_job(cfg, adapter, record):
    from visual_attacks.run import run_attack

    return run_attack(cfg, adapter, record, log=lambda line: print(line, file=sys.stderr, flush=True))


def run_attack_job(out_dir, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-attack OVERRIDES...` from Python (notebooks): the record goes to `out_dir`.
    Returns the metrics and the record's path."""
    cfg = compose_config("attack", overrides, validate)
    metrics, record = run_job(cfg, "visual_attack", lambda adapter, record: attack_job(cfg, adapter, record), out_dir)
    return metrics, str(record.record_path)


def job(cfg: DictConfig) -> None:
    metrics, record = run_job(cfg, "visual_attack", lambda adapter, record: attack_job(cfg, adapter, record))
    print(json.dumps({k: metrics.get(k) for k in ("images", "asr", "clean_baseline", "asr_by", "stealth", "steps_run")}, indent=2))
    print(f"record: {record.record_path}")


def main() -> None:
    run_app("attack", job, validate)


if __name__ == "__main__":
    main()
