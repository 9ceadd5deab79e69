"""`mmsafety-eval`: GOAT-Bench on one model per job (Hydra; `-m` sweeps)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from mmsafety.app import load_model, open_record, run_app
from mmsafety.config import validate_common


def validate(cfg: DictConfig) -> None:
    from goat_bench.evaluate import check_task_config
    from mmsafety.errors import ConfigError
    from mmsafety.models.registry import adapter_class

    validate_common(cfg)
    scoring = cfg.scoring.value if hasattr(cfg.scoring, "value") else str(cfg.scoring)
    check_task_config(cfg.task, scoring)
    if scoring == "generate" and not adapter_class(cfg.model.adapter).supports_generation:
        raise ConfigError(f"model={cfg.model.name} ({cfg.model.adapter}) cannot generate text; use scoring=logprob")


def job(cfg: DictConfig) -> None:
    from goat_bench.evaluate import evaluate, format_table

    log = lambda line: print(line, file=sys.stderr, flush=True)
    record = open_record(cfg, "goat_bench")
    try:
        adapter = load_model(cfg)
        metrics = evaluate(cfg, adapter, record, log=log)
        record.update(metrics=metrics)
        record.write("completed")
    except KeyboardInterrupt:
        record.write("partial")
        raise
    except Exception as e:
        record.update(error=f"{type(e).__name__}: {e}")
        record.write("failed")
        raise
    finally:
        record.close()
    print(format_table(metrics))
    print(f"record: {record.record_path}")


def main() -> None:
    run_app("eval", job, validate)


if __name__ == "__main__":
    main()
