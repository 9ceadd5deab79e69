"""`mmsafety-eval`: GOAT-Bench on one model per job (Hydra; `-m` sweeps)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from mmsafety.app import run_app, run_job
from mmsafety.config import plain, validate_common


def validate(cfg: DictConfig) -> None:
    from goat_bench.evaluate import check_task_config
    from mmsafety.errors import ConfigError
    from mmsafety.models.registry import adapter_class

    validate_common(cfg)
    scoring = plain(cfg.scoring)
    check_task_config(cfg.task, scoring)
    if scoring == "generate" and not adapter_class(cfg.model.adapter).supports_generation:
        raise ConfigError(f"model={cfg.model.name} ({cfg.model.adapter}) cannot generate text; use scoring=logprob")


def job(cfg: DictConfig) -> None:
    from goat_bench.evaluate import evaluate, format_table

    log = lambda line: print(line, file=sys.stderr, flush=True)
    metrics, record = run_job(cfg, "goat_bench", lambda adapter, record: evaluate(cfg, adapter, record, log=log))
    print(format_table(metrics))
    print(f"record: {record.record_path}")


def main() -> None:
    run_app("eval", job, validate)


if __name__ == "__main__":
    main()
