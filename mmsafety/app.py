"""The console scripts and their Python twins, for any registered workload.

`run_app("goat_bench")` is a whole console script: the command line is composed and validated
once (every value of a sweep too) before Hydra starts a job, so a mistake is one line and no job
runs; a single job reuses what validation built (e.g. the attack case). The capabilities the job
needs are checked against the adapter class before any weights load. The core names no workload:
each package's console script passes its registry key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig

from mmsafety.cli.hydra_errors import explain as _explain  # noqa: F401  (stable name)
from mmsafety.cli.job_log import job_log, print_line, result_log
from mmsafety.cli.launchers import check_launcher
from mmsafety.cli.lifecycle import RunNotCompleted, open_record, plain_config, run_job  # noqa: F401  (stable names)
from mmsafety.cli.loading import check_capabilities, load_model
from mmsafety.cli.output_dir import STORAGE_ERRORS, check_output_dir, describe_os_error
from mmsafety.cli.resolvers import register as _register
from mmsafety.cli.resolvers import shard_suffix, slug  # noqa: F401  (stable names)
from mmsafety.cli.run_identity import check_run_folder, check_sweep_folder, job_config_sha256
from mmsafety.cli.sweeps import every_job, is_hydra_override, override_variants
from mmsafety.errors import UserError
from mmsafety.models.base import ModelAdapter
from mmsafety.workload import WORKLOADS, Workload

CONFIG_MODULE = "mmsafety.conf"


_log = print_line  # a job run from Python logs to stderr; a console script's job also to its log file

INTERRUPTED = "interrupted; rerun the same command to resume"


def _compose(config_name: str, overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_module

    _register()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)
        except Exception as e:  # Hydra raises several types; all of them are config mistakes here
            raise UserError(_explain(e)) from None


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


def check_command_line(workload_name: str, overrides: list[str], multirun: bool):
    """Compose and validate every value of every sweep once, before Hydra runs a job, and refuse an
    output folder that cannot be written. Returns what validating the first variant built."""
    from hydra.core.utils import setup_globals

    workload = WORKLOADS.get(workload_name)
    setup_globals()  # Hydra's resolvers (${now:...}) for the output folder's name
    hydra_overrides = [o for o in overrides if is_hydra_override(o)]
    prepared = None
    for i, variant in enumerate(override_variants(overrides)):
        cfg = None
        if i == 0:  # with Hydra's own config: the output folder (every job of a sweep shares its folder)
            try:
                cfg = _compose(workload.config_name, variant + hydra_overrides, with_hydra=True)
            except UserError:
                pass  # a hydra.* value Hydra will report itself; the job's own config is checked next
        cfg = cfg if cfg is not None else _compose(workload.config_name, variant)
        built = validate_job(workload_name, cfg)
        if i == 0:
            prepared = built
            if "hydra" in cfg:
                target = _check_output_folder(cfg, multirun)
                if multirun:
                    check_launcher(cfg)  # e.g. hydra/launcher=slurm where there is no SLURM
                    if target is not None and target.is_dir():
                        _check_sweep_jobs(workload.config_name, target, overrides)
                elif target is not None:
                    check_run_folder(target, job_config_sha256(cfg))
    return prepared


def _check_output_folder(cfg: DictConfig, multirun: bool) -> Path | None:
    """The output folder (the sweep's under -m), refused when it cannot be written; None when its
    name needs a running job to resolve (Hydra checks it then)."""
    try:
        target = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir).absolute()
    except Exception:
        return None
    check_output_dir(target, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    return target


def _check_sweep_jobs(config_name: str, sweep_dir: Path, overrides: list[str]) -> None:
    """A sweep into a folder that already holds runs: every run there must be a job of this sweep
    (the same command resumes it). Composes every job of the sweep, so only when the folder exists."""
    if not any(sweep_dir.glob("*/record.json")):
        return
    shas = {job_config_sha256(_compose(config_name, [o for o in job if not is_hydra_override(o)]))
            for job in every_job(overrides)}
    check_sweep_folder(sweep_dir, shas)


def run_app(workload_name: str) -> None:
    """Entry point of a workload's console script: check the command line, then hand it to Hydra.
    Ctrl-C anywhere is one line and exit status 130 (the record, if the job had started, is partial)."""
    try:
        failed_jobs = _run_app(workload_name)
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
        sys.exit(130)
    if failed_jobs:
        print(f"error: {failed_jobs} job(s) of the sweep failed or did not complete (each said why above; its record "
              f"says failed or partial)",
              file=sys.stderr)
        sys.exit(1)


def _run_app(workload_name: str) -> int:
    """Check the command line, run it through Hydra; returns how many jobs of a sweep failed."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _register()
    workload: Workload = WORKLOADS.get(workload_name)
    args = sys.argv[1:]
    multirun = any(a in ("-m", "--multirun") for a in args)
    checked, validated = None, False
    # Flags that show help or config, or pick another config: Hydra's business (overrides never start with -).
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        try:
            checked = check_command_line(workload_name, [a for a in args if not a.startswith("-")], multirun)
            validated = True
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    failed = []  # the sweep's jobs that failed: the sweep goes on, then exits non-zero

    def task(cfg: DictConfig) -> None:
        try:
            # A single job runs the config just validated; each job of a sweep validates its own.
            prepared = checked if validated and not multirun else validate_job(workload_name, cfg)
            metrics, record = run_job(cfg, workload_name,
                                      lambda model, rec: workload.run(cfg, model, rec, prepared, job_log))
            table = workload.summary(metrics)
            print(table)
            print(f"record: {record.record_path}")
            result_log(f"result:\n{table}\nrecord: {record.record_path}")
            if record.data["status"] != "completed":  # some samples errored: the table is over the answered ones
                raise RunNotCompleted(record.data.get("stopped", "the run did not complete"), exit_status=3)
        except KeyboardInterrupt:
            job_log(INTERRUPTED)  # the record is partial: the same command resumes it
            sys.exit(130)
        except (UserError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in STORAGE_ERRORS:
                raise  # not a full or read-only disk: the traceback is the useful report
            sweep = HydraConfig.get().mode == RunMode.MULTIRUN
            message = str(e) if isinstance(e, UserError) else describe_os_error(
                e, HydraConfig.get().runtime.output_dir, "hydra.sweep.dir" if sweep else "hydra.run.dir")
            job_log(f"error: {message}")
            if not sweep:
                sys.exit(getattr(e, "exit_status", 2))
            failed.append(HydraConfig.get().job.num)  # the other jobs go on; this one's record says failed

    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=workload.config_name)(task)()
    return len(failed)
