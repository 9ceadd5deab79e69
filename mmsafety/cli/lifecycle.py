"""A job's record from start to end: opened before the model loads, left completed, partial
(interrupted) or failed (with the error), never missing."""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig, OmegaConf

from mmsafety.models.base import ModelAdapter
from mmsafety.record_kinds import schema_of
from mmsafety.records import RunRecord


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def open_record(cfg: DictConfig, kind: str, out_dir=None) -> RunRecord:
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    return RunRecord.open(out_dir, kind, plain_config(cfg), seeds={"seed": cfg.seed}, schema=schema_of(kind))


def run_job(cfg: DictConfig, kind: str, work: Callable[[ModelAdapter, RunRecord], dict], out_dir=None,
            load: Callable[[DictConfig], ModelAdapter] | None = None) -> tuple[dict, RunRecord]:
    """Open the job's record (in Hydra's output folder unless `out_dir` is given), load the model
    (`load`, default mmsafety.cli.loading.load_model), run `work`, and leave the record completed,
    partial (interrupted) or failed (with the error), never missing."""
    from mmsafety.served.errors import BudgetExhausted

    if load is None:
        from mmsafety.cli.loading import load_model as load
    record = open_record(cfg, kind, out_dir)
    model = None

    def note_served():  # a served model's settings and accounting (requests, tokens, cost)
        if hasattr(model, "served_record"):
            record.update(served=model.served_record())

    try:
        model = load(cfg)
        metrics = work(model, record)
        record.update(metrics=metrics)
        note_served()
        record.write("completed")
    except (KeyboardInterrupt, BudgetExhausted) as e:
        if isinstance(e, BudgetExhausted):  # a budget (max_requests, max_cost) ends the run cleanly
            record.update(stopped=str(e))
        note_served()
        record.write("partial")
        raise
    except Exception as e:
        record.update(error=f"{type(e).__name__}: {e}")
        note_served()
        record.write("failed")
        raise
    finally:
        record.close()
        if hasattr(model, "close"):
            model.close()
    return metrics, record
