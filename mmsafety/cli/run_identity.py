"""What identifies a run, and which folder may hold it.

A run is identified by its whole resolved job config (everything but Hydra's own `hydra` node):
the model and its placement (device and dtype change the numbers), the data (task.root,
task.limit, shards), the scoring or attack settings, the seeds, and the execution settings
(batch sizes, image workers), which can change rounding. `record.json` stores the sha256 of that
config (`config_sha256`); a folder name carries its first 8 hex digits (`${config_hash:}` in
conf/eval.yaml and conf/attack.yaml), so two different configs never share a folder, and the same
command always finds its own folder again (resume).

A folder already holding a run is reused when the configs match (resume), or when the run there
failed before it wrote a sample (e.g. `model=llava_1_5_7b` without a GPU): nothing is lost by
starting it over. Any other run there is a real conflict, refused before Hydra writes anything.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmsafety.errors import UserError
from mmsafety.record_kinds import schema_of
from mmsafety.record_schema import record_problems
from mmsafety.records import config_sha256, read_samples, same_job
from mmsafety.safe_json import loads_object

HASH_CHARS = 8


def job_config_sha256(cfg: DictConfig) -> str:
    """sha256 of the job's resolved config without the `hydra` node: the record's `config_sha256`."""
    job = copy.deepcopy(cfg)
    if "hydra" in job:
        with read_write(job), open_dict(job):
            del job["hydra"]
    return config_sha256(OmegaConf.to_container(job, resolve=True, enum_to_str=True))


def config_hash(*, _root_: DictConfig) -> str:
    """The `${config_hash:}` resolver of folder names: 8 hex digits of the job's config sha256."""
    return job_config_sha256(_root_)[:HASH_CHARS]


def previous_run(folder: Path) -> dict | None:
    """The record a run left in `folder`, if it holds a readable one."""
    try:
        previous = loads_object((Path(folder) / "record.json").read_bytes())
    except (OSError, ValueError):
        return None
    if record_problems(previous, schema_of) or not isinstance(previous.get("config_sha256"), str):
        return None
    return previous


def replaceable(folder: Path, previous: dict) -> bool:
    """A run that failed before writing any sample: starting it over with another config loses nothing."""
    return previous.get("status") == "failed" and not read_samples(Path(folder) / "samples.jsonl")


def conflict(folder: Path, sha: str) -> dict | None:
    """The run in `folder` that a job with config `sha` must not touch (None: the folder is free to use)."""
    previous = previous_run(folder)
    if previous is None or same_job(previous, sha) or replaceable(folder, previous):
        return None
    return previous


def check_run_folder(folder: Path, sha: str, key: str = "hydra.run.dir") -> None:
    """Refuse, before anything is written, a run folder that holds another config's run."""
    previous = conflict(folder, sha)
    if previous is not None:
        raise UserError(f"{folder} holds a {previous.get('status')} run with a different config (its record.json); "
                        f"pass {key}=NEW_DIR, or delete that folder to start over")


def check_sweep_folder(sweep_dir: Path, job_shas: set[str]) -> None:
    """Refuse a sweep folder that holds runs of another sweep: each run there must be one of this
    sweep's jobs (the same command again resumes them; a failed run with no samples may be replaced)."""
    for record in sorted(Path(sweep_dir).glob("*/record.json")):
        previous = previous_run(record.parent)
        if previous is None or previous["config_sha256"] in job_shas or replaceable(record.parent, previous):
            continue
        raise UserError(f"{sweep_dir} holds runs of another sweep ({record.parent.name} has a different config); "
                        f"pass hydra.sweep.dir=NEW_DIR, or run the same command as that sweep to resume it")
