"""The console scripts and their Python twins, for any registered workload.

`run_app("goat_bench")` is a whole console script: the command line is composed and validated
once (every value of a sweep too) before Hydra starts a job, so a mistake is one line and no job
runs; a single job reuses what validation built (e.g. the attack case). The capabilities the job
needs are checked against the adapter class before any weights load. The core names no workload:
each package's console script passes its registry key.
"""

from __future__ import annotations

from typing import Callable, Sequence

from omegaconf import DictConfig

from mmsafety.cli.command import CONFIG_MODULE, INTERRUPTED, JobCommand, run_command  # noqa: F401  (stable names)
from mmsafety.cli.command import check_command_line as check_job_command_line
from mmsafety.cli.command import compose as _compose
from mmsafety.cli.hydra_errors import explain as _explain  # noqa: F401  (stable name)
from mmsafety.cli.job_log import job_log, print_line, result_log
from mmsafety.cli.lifecycle import RunNotCompleted, open_record, plain_config, run_job  # noqa: F401  (stable names)
from mmsafety.cli.loading import check_capabilities, load_model
from mmsafety.cli.output_dir import describe_os_error  # noqa: F401  (stable name)
from mmsafety.cli.resolvers import register as _register
from mmsafety.cli.resolvers import shard_suffix, slug  # noqa: F401  (stable names)
from mmsafety.models.base import ModelAdapter
from mmsafety.workload import WORKLOADS, Workload

_log = print_line  # a job run from Python logs to stderr; a console script's job also to its log file


def validate_job(workload_name: str, cfg: DictConfig):
    """The workload's own checks, then the model's capabilities (by its adapter class, no weights).
    Returns what the workload built while checking (handed to its `run`)."""
    workload = WORKLOADS.get(workload_name)
    prepared = workload.validate(cfg)
    check_capabilities(cfg, workload_name, workload.needs(cfg))
    return prepared


def compose_config(config_name: str, overrides: Sequence[str] = (),
                   validate: Callable[[DictConfig], object] | None = None) -> DictConfig:
    """The config a console script would run with these command-line overrides (for notebooks
    and scripts); a bad override raises UserError with the same one-line message."""
    cfg = _compose(config_name, overrides)
    if validate is not None:
        validate(cfg)
    return cfg


def load_preset(model: str = "organism", placement: str = "cpu", *overrides: str) -> ModelAdapter:
    """A model from its conf/model preset, built first if it is a builder model:
    `load_preset("organism")`, `load_preset("llava_1_5_7b", "cuda")`."""
    return load_model(compose_config("load_model", [f"model={model}", f"placement={placement}", *overrides]))


def run_workload_job(workload_name: str, out_dir, *overrides: str, log=_log) -> tuple[dict, str]:
    """A console script's job from Python (notebooks): compose, validate once, run; the record goes
    to `out_dir`. Returns the metrics and the record's path."""
    workload = WORKLOADS.get(workload_name)
    cfg = _compose(workload.config_name, overrides)
    prepared = validate_job(workload_name, cfg)
    metrics, record = run_job(cfg, workload_name, lambda model, rec: workload.run(cfg, model, rec, prepared, log), out_dir)
    return metrics, str(record.record_path)


def workload_command(workload_name: str) -> JobCommand:
    """A workload's console script as a JobCommand: validate by the workload and the model's
    capabilities; a job loads the model, runs the workload into its record and prints its table."""
    workload: Workload = WORKLOADS.get(workload_name)

    def run(cfg: DictConfig, prepared) -> None:
        metrics, record = run_job(cfg, workload_name, lambda model, rec: workload.run(cfg, model, rec, prepared, job_log))
        table = workload.summary(metrics)
        print(table)
        print(f"record: {record.record_path}")
        result_log(f"result:\n{table}\nrecord: {record.record_path}")
        if record.data["status"] != "completed":  # some samples errored: the table is over the answered ones
            raise RunNotCompleted(record.data.get("stopped", "the run did not complete"), exit_status=3)

    return JobCommand(workload.config_name, lambda cfg: validate_job(workload_name, cfg), run)


def check_command_line(workload_name: str, overrides: list[str], multirun: bool):
    """Compose and validate every value of every sweep once, before Hydra runs a job, and refuse an
    output folder that cannot be written. Returns what validating the first variant built."""
    return check_job_command_line(workload_command(workload_name), overrides, multirun)


def run_app(workload_name: str) -> None:
    """Entry point of a workload's console script: check the command line, then hand it to Hydra
    (mmsafety.cli.command: the lifecycle every job command shares)."""
    _register()
    run_command(workload_command(workload_name))
