"""Glue for the Hydra apps: strict config checking with one-line errors, model loading, records.

goat_bench and visual_attacks each define a console script that calls `run_app` with
their config name and job function; the core knows nothing about either workload.
"""

from __future__ import annotations

import errno
import re
import sys
from typing import Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mmsafety.config import plain, register_schemas
from mmsafety.errors import UserError
from mmsafety.models.base import VLMAdapter
from mmsafety.models.loading import LoadOptions
from mmsafety.models.registry import adapter_class
from mmsafety.placement import resolve_placement
from mmsafety.records import RunRecord

CONFIG_MODULE = "mmsafety.conf"


def slug(value) -> str:
    """A folder-safe spelling of a config value: 8/255 -> 8-255, Scoring.logprob -> logprob."""
    text = plain(value)
    text = re.sub(r"^[A-Z]\w*\.(\w+)$", r"\1", text)  # an enum interpolated as ClassName.member
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def shard_suffix(shard, num_shards) -> str:
    """`-shard1of4` in folder names of sharded jobs, nothing otherwise."""
    return f"-shard{shard}of{num_shards}" if int(num_shards) > 1 else ""


def _register() -> None:
    register_schemas()
    if not OmegaConf.has_resolver("slug"):
        OmegaConf.register_new_resolver("slug", slug)
    if not OmegaConf.has_resolver("shard_suffix"):
        OmegaConf.register_new_resolver("shard_suffix", shard_suffix)


def load_model(cfg: DictConfig) -> VLMAdapter:
    """Build (if it is a builder model) and load the configured model through its adapter."""
    from mmsafety.organisms.builders import ensure_built

    m, p = cfg.model, cfg.placement
    if getattr(adapter_class(m.adapter), "takes_model_config", False):  # a served model: no weights to place
        return adapter_class(m.adapter).from_config(m)
    placement = resolve_placement(p.device, plain(p.dtype), p.device_map, p.gradient_checkpointing, p.compile)
    source = str(ensure_built(m.builder, m.seed)) if m.builder else m.name_or_path
    opts = LoadOptions(allow_pickle=m.allow_pickle, trust_remote_code=m.trust_remote_code,
                       revision=m.revision, local_files_only=m.local_files_only)
    return adapter_class(m.adapter).load(source, opts, placement)


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def open_record(cfg: DictConfig, kind: str, out_dir=None) -> RunRecord:
    out_dir = out_dir if out_dir is not None else HydraConfig.get().runtime.output_dir
    return RunRecord(out_dir, kind, plain_config(cfg), seeds={"seed": cfg.seed})


def compose_config(config_name: str, overrides: Sequence[str] = (),
                   validate: Callable[[DictConfig], None] | None = None) -> DictConfig:
    """The config a console script would run with these command-line overrides (for notebooks
    and scripts); a bad override raises UserError with the same one-line message."""
    from hydra import compose, initialize_config_module

    _register()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=list(overrides))
        except Exception as e:  # Hydra raises several types; all of them are config mistakes here
            raise UserError(_explain(e)) from None
    if validate is not None:
        validate(cfg)
    return cfg


def load_preset(model: str = "organism", placement: str = "cpu", *overrides: str) -> VLMAdapter:
    """A model from its conf/model preset, built first if it is a builder model:
    `load_preset("organism")`, `load_preset("llava_1_5_7b", "cuda")`."""
    return load_model(compose_config("eval", [f"model={model}", f"placement={placement}", *overrides]))


def run_job(cfg: DictConfig, kind: str, work: Callable[[VLMAdapter, RunRecord], dict], out_dir=None) -> tuple[dict, RunRecord]:
    """Open the job's record (in Hydra's output folder unless `out_dir` is given), load the model,
    run `work`, and leave the record completed, partial (interrupted) or failed (with the error),
    never missing."""
    from mmsafety.served.errors import BudgetExhausted

    record = open_record(cfg, kind, out_dir)
    adapter = None

    def note_served():  # a served model's settings and accounting (requests, tokens, cost)
        if hasattr(adapter, "served_record"):
            record.update(served=adapter.served_record())

    try:
        adapter = load_model(cfg)
        metrics = work(adapter, record)
        record.update(metrics=metrics)
        note_served()
        record.write("completed")
    except (KeyboardInterrupt, BudgetExhausted) as e:
        if isinstance(e, BudgetExhausted):
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
        if hasattr(adapter, "close"):
            adapter.close()
    return metrics, record


def _override_variants(overrides: list[str]) -> list[list[str]]:
    """Plain override lists that together cover every value of every sweep (`key=a,b,c`):
    each sweep's values in turn, the other sweeps at their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base, sweeps = [], []
    for raw, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if o.is_hydra_override():
            continue  # hydra.* and hydra/launcher=...: Hydra checks those itself
        if o.is_sweep_override():
            key = raw.split("=", 1)[0]
            values = list(o.sweep_string_iterator())
            sweeps.append((len(base), key, values))
            raw = f"{key}={values[0]}"
        base.append(raw)
    variants = [base]
    for index, key, values in sweeps:
        for value in values[1:]:
            variant = list(base)
            variant[index] = f"{key}={value}"
            variants.append(variant)
    return variants


def _explain(error: Exception) -> str:
    """Hydra/OmegaConf's composition errors, cut to one line that names the key and the fix."""
    text = str(error).strip()
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group = missing.group(1).split("/")[0]
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        shown = ", ".join(o for o in options if not o.endswith("_schema"))
        return f"{missing.group(1).replace('/', '=', 1)}: no such option in '{group}'; available: {shown}"
    detail = str(error.__cause__ or error).strip()
    key = re.search(r"full_key: (\S+)", detail)
    first = detail.splitlines()[0] if detail else repr(error)
    prefix = f"{key.group(1)}: " if key else ""
    if " not in " in first:
        return f"{prefix}no such config key ({first}); `--cfg job` lists the keys"
    return prefix + first


def check_overrides(config_name: str, overrides: list[str], validate: Callable[[DictConfig], None]) -> None:
    """Compose once before Hydra does, so a bad override fails in one line instead of a report."""
    for variant in _override_variants(overrides):
        compose_config(config_name, variant, validate)


# A disk that is full, over quota, read-only or not ours: the user can fix these, then resume.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def describe_os_error(error: OSError, out_dir) -> str:
    """One line for a failed read or write (disk full, permissions, ...) that names the fix."""
    where = error.filename or out_dir
    return (f"{error.strerror or error} ({where}); the record keeps every sample written so far: "
            f"free space or fix permissions and run the same command again to resume, "
            f"or pass hydra.run.dir=ANOTHER_DIR")


def check_output_dir(config_name: str, overrides: list[str], multirun: bool) -> None:
    """Refuse an output folder that cannot be created or written, before Hydra or a job touches it."""
    import os
    from pathlib import Path

    from hydra import compose, initialize_config_module
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's resolvers (${now:...}) for the output folder's name
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            # The first job of a sweep: every job shares the sweep folder.
            hydra_overrides = [o for o in overrides if o.startswith(("hydra.", "hydra/", "+hydra", "++hydra"))]
            cfg = compose(config_name=config_name, overrides=_override_variants(overrides)[0] + hydra_overrides,
                          return_hydra_config=True)
        target = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir).absolute()
    except Exception:  # a folder name that needs a running job to resolve: Hydra checks it then
        return
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {target}: {existing} is a file, not a folder; pass {key}=A_FOLDER")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output folder {target}: {existing} is not writable; "
                        f"pass {key}=A_WRITABLE_FOLDER")


def run_app(config_name: str, job: Callable[[DictConfig], None], validate: Callable[[DictConfig], None]) -> None:
    """Entry point of a console script: check the command line, then hand it to Hydra."""
    _register()
    args = sys.argv[1:]
    # Flags that show help or config, or pick another config: leave those to Hydra.
    hydra_flags = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--cfg", "-c",
                   "--resolve", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                   "-cd", "--version"}
    if not any(a.split("=")[0] in hydra_flags for a in args):
        overrides = [a for a in args if not a.startswith("-")]
        try:
            check_overrides(config_name, overrides, validate)
            check_output_dir(config_name, overrides, multirun=any(a in ("-m", "--multirun") for a in args))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def task(cfg: DictConfig) -> None:
        try:
            validate(cfg)
            job(cfg)
        except (UserError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in STORAGE_ERRORS:
                raise  # not a full or read-only disk: the traceback is the useful report
            message = str(e) if isinstance(e, UserError) else describe_os_error(e, HydraConfig.get().runtime.output_dir)
            print(f"error: {message}", file=sys.stderr)
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                sys.exit(2)  # in a sweep the other jobs go on; this one's record says failed

    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name)(task)()
