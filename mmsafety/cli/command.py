"""One lifecycle for every Hydra job command (eval, attack, judge, HarmBench judge, judge agreement).

The command line is composed and checked once, every value of a sweep too, before Hydra starts a
job, so a mistake is one line (exit status 2) and nothing is written; the output folder
(`hydra.run.dir`, `hydra.sweep.dir` under -m) is refused when it cannot be written, or when it holds
another config's run; a job's bad input or full disk is one line; Ctrl-C is one line (exit status
130); a sweep goes on past a failed job and exits 1. Flags (`--help`, `--cfg job`, ...) go to Hydra
untouched. A command supplies its config's name, its checks and its job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from hydra import compose as hydra_compose, initialize_config_module
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from mmsafety.cli import sweep_status
from mmsafety.cli.help import HELP_FLAGS, command_help
from mmsafety.cli.hydra_errors import explain
from mmsafety.cli.job_log import job_log
from mmsafety.cli.launchers import check_launcher
from mmsafety.cli.loading import MissingCapability
from mmsafety.cli.presets import CONFIG_MODULE, check_target_is_read, check_workload_groups, transfer_route
from mmsafety.cli.output_dir import STORAGE_ERRORS, check_output_dir, describe_os_error
from mmsafety.cli.resolvers import register
from mmsafety.cli.run_identity import check_run_folder, check_sweep_folder, job_config_sha256
from mmsafety.cli.sweeps import every_job, is_hydra_override, override_variants
from mmsafety.errors import ConfigError, UserError
from mmsafety.registry import closest
from mmsafety.models.capabilities import PIXEL_LOSS

INTERRUPTED = "interrupted; rerun the same command to resume"


@dataclass(frozen=True)
class JobCommand:
    """`validate(cfg)`: one UserError line on bad input, else what the job may reuse (e.g. a built
    attack case). `run(cfg, prepared)`: one job in Hydra's output folder; prints its result.
    `record_is_job_config`: the record.json a job leaves in its folder stores this job config's
    sha256 (eval, attack), so a folder holding another config's run is refused before Hydra writes."""

    config_name: str
    validate: Callable[[DictConfig], object]
    run: Callable[[DictConfig, object], None]
    record_is_job_config: bool = True


def compose(config_name: str, overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """The config of `config_name` (conf/) with these overrides; a mistake is one UserError line."""
    register()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            # Hydra composes its own node either way; its choices say which preset each group got.
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        except Exception as e:  # Hydra raises several types; all of them are config mistakes here
            raise UserError(explain(e)) from None
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        check_workload_groups(choices)
        check_target_is_read(cfg, choices, overrides)
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def check_command_line(command: JobCommand, overrides: list[str], multirun: bool):
    """Compose and validate every value of every sweep once, before Hydra runs a job, and refuse an
    output folder that cannot be written. Returns what validating the first variant built."""
    setup_globals()  # Hydra's resolvers (${now:...}) for the output folder's name
    hydra_overrides = [o for o in overrides if is_hydra_override(o)]
    prepared = None
    for i, variant in enumerate(override_variants(overrides)):
        if i == 0:
            _check_added_keys(command.config_name, variant)
        cfg = None
        if i == 0:  # with Hydra's own config: the output folder (every job of a sweep shares its folder)
            try:
                cfg = compose(command.config_name, variant + hydra_overrides, with_hydra=True)
            except UserError:
                pass  # a hydra.* value Hydra will report itself; the job's own config is checked next
        cfg = cfg if cfg is not None else compose(command.config_name, variant)
        try:
            built = command.validate(cfg)
        except MissingCapability as e:
            with_hydra = cfg if "hydra" in cfg else compose(command.config_name, variant, with_hydra=True)
            raise ConfigError(f"{e}{_next_step(with_hydra, e, overrides, multirun)}") from None
        if i == 0:
            prepared = built
            if "hydra" in cfg:
                _check_output_folders(command, cfg, overrides, multirun)
    return prepared


def _check_added_keys(config_name: str, overrides: list[str]) -> None:
    """`+attack.stpes=5` adds a key beside `steps` that nothing reads: a typo Hydra accepts. Refused when
    the new key is close to one already there (a genuinely new key, `+case.judge.model.name_or_path`, is not)."""
    added = [o for o in overrides if o.startswith("+") and not o.startswith("++") and "=" in o]
    if not added:
        return
    base = compose(config_name, [o for o in overrides if o not in added])
    for override in added:
        key = override[1:].split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and leaf not in node:
            close = closest(leaf, [str(k) for k in node.keys()], n=1)
            if close:
                fixed = f"{parent}.{close[0]}" if parent else close[0]
                raise ConfigError(f"{override}: adds a key {leaf} beside {close[0]} (did you mean {fixed}={override.split('=', 1)[1]}?)")


def _next_step(cfg: DictConfig, error: MissingCapability, overrides: list[str], multirun: bool) -> str:
    """What to type when the model cannot take gradients (a served model, for a craft stage): the transfer route."""
    if PIXEL_LOSS not in error.missing:
        return ""
    choices = cfg.hydra.runtime.choices
    return transfer_route(cfg.hydra.help.app_name, choices.get("model") or cfg.model.name, overrides, multirun)


def _check_output_folders(command: JobCommand, cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    target = output_folder(cfg, multirun)
    if multirun:
        check_launcher(cfg)  # e.g. hydra/launcher=slurm where there is no SLURM
        if command.record_is_job_config and target is not None and target.is_dir():
            _check_sweep_jobs(command.config_name, target, overrides)
    elif target is not None and command.record_is_job_config:
        check_run_folder(target, job_config_sha256(cfg))


def output_folder(cfg: DictConfig, multirun: bool = False) -> Path | None:
    """The output folder (the sweep's under -m) of a config composed with its `hydra` node, refused
    when it cannot be written; None when its name needs a running job to resolve (Hydra checks it then)."""
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
    shas = {job_config_sha256(compose(config_name, [o for o in job if not is_hydra_override(o)]))
            for job in every_job(overrides)}
    check_sweep_folder(sweep_dir, shas)


def run_command(command: JobCommand, args: list[str] | None = None) -> None:
    """A console script: check the command line (`args`, default sys.argv[1:]), then hand it to Hydra.
    Ctrl-C anywhere is one line and exit status 130 (the record, if the job had started, is partial)."""
    args = sys.argv[1:] if args is None else args
    try:
        failed_jobs = _run(command, args)
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
        sys.exit(130)
    if failed_jobs:
        print(f"error: {failed_jobs}", file=sys.stderr)
        sys.exit(1)


def _run(command: JobCommand, args: list[str]) -> str | None:
    """Check the command line, run it through Hydra; returns a line naming the jobs of a sweep that did
    not complete (None when all did, or for a single run)."""
    register()
    if any(a in HELP_FLAGS for a in args):  # this command's groups and options, not every group on the search path
        try:
            print(command_help(compose(command.config_name, [a for a in args if not a.startswith("-")], with_hydra=True)))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        return None
    multirun = any(a in ("-m", "--multirun") for a in args)
    checked, validated = None, False
    # Flags that show help or config, or pick another config: Hydra's business (overrides never start with -).
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        try:
            checked = check_command_line(command, [a for a in args if not a.startswith("-")], multirun)
            validated = True
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    failed = []  # the sweep's jobs that failed: the sweep goes on, then exits non-zero

    def task(cfg: DictConfig) -> None:
        try:
            # A single job runs the config just validated; each job of a sweep validates its own.
            command.run(cfg, checked if validated and not multirun else command.validate(cfg))
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
                sys.exit(getattr(e, "exit_status", 2))  # 2: bad input; a run that did not complete says its own
            failed.append(HydraConfig.get().job.num)  # the other jobs go on; this one's record says failed

    sys.argv = [sys.argv[0], *args]  # what Hydra parses
    sweep_status.LAST_SWEEP.clear()
    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=command.config_name)(task)()
    if not multirun:
        return None
    # The records decide (under SLURM, jobs fail where this process cannot see them; the sweep_status
    # callback reads them); a job seen failing here counts even if its folder could not hold a record.
    overrides = [a for a in args if not a.startswith("-") and not is_hydra_override(a)]
    from_records = sweep_status.unfinished(len(every_job(overrides)))
    if from_records is None and failed:
        return f"{len(failed)} job(s) of the sweep failed (each said why above; its record says failed)"
    return from_records
