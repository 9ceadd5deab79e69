"""`mmsafety-eval`: GOAT-Bench on one model per job (Hydra; `-m` sweeps)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from mmsafety.app import compose_config, run_app, run_job
from mmsafety.config import plain, validate_common


def validate(cfg: DictConfig) -> None:
    from goat_bench.config_checks import check_eval_ranges
    from goat_bench.evaluate import check_task_config
    from mmsafety.errors import ConfigError
    from mmsafety.models.registry import adapter_class

    validate_common(cfg)
    check_eval_ranges(cfg)  # task.limit, synthetic_per_task, max_new_tokens, seeds
    scoring = plain(cfg.scoring)
    check_task_config(cfg.task, scoring)
    if scoring == "generate" and not adapter_class(cfg.model.adapter).supports_generation:
        raise ConfigError(f"model={cfg.model.name} ({cfg.model.adapter}) cannot generate text; use scoring=logprob")


def job(cfg: DictConfig) -> None:
    from goat_bench.evaluate import format_table

    metrics, record = run_job(cfg, "goat_bench", lambda adapter, record: evaluate_job(cfg, adapter, record))
    print(format_table(metrics))
    print(f"record: {record.record_path}")


def run_eval(out_dir, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-eval OVERRIDES...` from Python (notebooks): the record goes to `out_dir`.
    Returns the metrics and the record's path."""
    cfg = compose_config("eval", overrides, validate)
    metrics, record = run_job(cfg, "goat_bench", lambda adapter, record: evaluate_job(cfg, adapter, record), out_dir)
    return metrics, str(record.record_path)


def evaluate_job(cfg, adapter, record):
    from goat_bench.evaluate import evaluate

    return evaluate(cfg, adapter, record, log=lambda line: print(line, file=sys.stderr, flush=True))


def main() -> None:
    run_app("eval", job, validate)


if __name__ == "__main__":
    main()
