"""A job's record from start to end: opened before the model loads, left completed, partial
(interrupted) or failed (with the error), never missing."""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig, OmegaConf

from mmsafety.models.base import ModelAdapter
from mmsafety.records import RunRecord


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def open_record(cfg: DictConfig, kind: str, out_dir=None) -> RunRecord:
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    return RunRecord(out_dir, kind, plain_config(cfg), seeds={"seed": cfg.seed})


def run_job(cfg: DictConfig, kind: str, work: Callable[[ModelAdapter, RunRecord], dict], out_dir=None,
            load: Callable[[DictConfig], ModelAdapter] | None = None) -> tuple[dict, RunRecord]:
    """Open the job's record (in Hydra's output folder unless `out_dir` is given), load the model
    (`load`, default mmsafety.cli.loading.load_model), run `work`, and leave the record completed,
    partial (interrupted) or failed (with the error), never missing."""
    if load is None:
        from mmsafety.cli.loading import load_model as load
    record = open_record(cfg, kind, out_dir)
    try:
        metrics = work(load(cfg), record)
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
    return metrics, record
