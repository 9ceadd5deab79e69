"""`mmsafety-attack`: one visual attack per job (Hydra; `-m attack.eps=8/255,16/255` sweeps)."""

from __future__ import annotations

import json
import sys

from omegaconf import DictConfig

from mmsafety.app import run_app, run_job
from mmsafety.config import validate_attack, validate_common


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked without a model, so a sweep fails before its first job."""
    from visual_attacks.run import build_case

    validate_common(cfg)
    validate_attack(cfg.attack)
    build_case(cfg)  # builds the case's targets and prompt sets; cheap (no images are drawn yet)


def job(cfg: DictConfig) -> None:
    from visual_attacks.run import run_attack

    log = lambda line: print(line, file=sys.stderr, flush=True)
    metrics, record = run_job(cfg, "visual_attack", lambda adapter, record: run_attack(cfg, adapter, record, log=log))
    print(json.dumps({k: metrics.get(k) for k in ("images", "asr", "clean_baseline", "asr_by", "stealth", "steps_run")}, indent=2))
    print(f"record: {record.record_path}")


def main() -> None:
    run_app("attack", job, validate)


if __name__ == "__main__":
    main()
