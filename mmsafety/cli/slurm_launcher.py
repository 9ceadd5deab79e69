"""mmsafety's SLURM launcher (conf/hydra/launcher/slurm.yaml): Hydra's submitit launcher, plus what a
sweep on a cluster needs to tell the truth and resume cheaply.

- A rerun of the same sweep submits only its unfinished jobs: a job whose folder already holds a
  `completed` record of the same job config is not submitted again.
- Every job is waited for, even when some end without a result (`scancel`, a node failure, an
  out-of-memory kill): submitit's own launcher stops at the first such job with a traceback, leaving
  the others unwatched. A job that ended that way while its record was still `partial` (or before it
  wrote one) is left `failed`, with SLURM's reason in the record's `error`, so the sweep's exit status
  and leaderboard show it; the same command resumes it.
- sbatch refusing the resources (e.g. `placement=cuda` on a cluster without GPUs) is one line.
- A job that raises (a user's mistake is not raised: it is one line in the job's log and a failed
  record) hit a bug: its traceback, with the frames where it happened, goes to the job's log, and the
  sweep prints one line naming the exception and that log, and goes on with the other jobs. Hydra's
  own path would re-raise the exception in the submitting process, whose traceback (its frames lost
  in the pickle) shows only Hydra's sweeper, and stop there.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from mmsafety.cli.run_identity import job_config_sha256, previous_run
from mmsafety.cli.slurm_watch import GONE
from mmsafety.record_kinds import schema_of
from mmsafety.records import atomic_write_text, RunRecord
from mmsafety.workload import workload_for_config

log = logging.getLogger(__name__)
LOCK_WAIT_S = 180.0  # a cancelled job's process may run on for SLURM's KillWait, holding its record's lock


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        jobs = [(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        folders = {idx: self._job_folder(overrides, idx) for idx, overrides in jobs}
        returns: dict[int, JobReturn] = {}
        todo = []
        for idx, overrides in jobs:
            folder, sha = folders[idx] or (None, None)
            previous = previous_run(folder) if folder is not None else None
            if previous and previous.get("status") == "completed" and previous.get("config_sha256") == sha:
                returns[idx] = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, working_dir=str(folder))
            else:
                todo.append((idx, overrides))
        if returns:
            say(f"sweep: {len(returns)} of {len(jobs)} job(s) already completed in {self.config.hydra.sweep.dir}; "
                f"submitting the other {len(todo)}")
        if todo:
            for (idx, overrides), job in zip(todo, self._submit(todo)):
                returns[idx] = self._outcome(job, overrides, folders[idx])
        return [returns[idx] for idx, _ in jobs]

    def __call__(self, *args, **kwargs) -> JobReturn:
        """On the cluster: run the job (Hydra's run_job); an exception it raised is a bug, whose
        traceback goes to the job's log here, where its frames still exist."""
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
            error = ret._return_value
            traceback.print_exception(error, file=sys.stderr)
            sys.stderr.flush()
            ret.return_value = f"{type(error).__name__}: {error}".splitlines()[0]  # travels back as text
        return ret

    def _job_folder(self, overrides: list[str], idx: int) -> tuple[Path, str] | None:
        """The job's run folder and config sha256, as the job itself will resolve them (None if they
        cannot be resolved here: the job is then submitted and its record is left to it)."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = idx
            return Path(str(self.config.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir), job_config_sha256(cfg)
        except Exception:
            return None

    def _submit(self, todo: list[tuple[int, list[str]]]) -> list:
        """Submit these jobs as one array (hydra_submitit_launcher's executor set-up, unchanged)."""
        # optional dependency: submitit (the slurm extra)
        import submitit
        from submitit.core.utils import FailedJobError

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=params.pop("submitit_folder"),
                                         **{f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for idx, overrides in todo:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                      for idx, overrides in todo]
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal: said below, once
                return executor.map_array(self, *zip(*job_params))
        except FailedJobError as e:  # sbatch refused the submission
            say(f"error: {refusal_line(str(e), params.get('gpus_per_node'))}")
            raise SystemExit(2) from None

    def _outcome(self, job, overrides: list[str], folder: tuple[Path, str] | None) -> JobReturn:
        """The job's own JobReturn; for a job that ended without one (cancelled, killed), its record is
        left failed with SLURM's reason, and the sweep goes on to the next job."""
        # optional dependency: submitit (the slurm extra)
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            ret = job.results()[0]
            if ret.status != JobStatus.FAILED:
                return ret
            reason = (f"SLURM job {job.job_id} raised {ret._return_value} (a bug, not a mistake in the command: "
                      f"its traceback is in {job.paths.stderr}; please report it)")
        except FailedJobError as e:  # the job's process raised past Hydra (its log has the traceback)
            last = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), "no message")
            reason = f"SLURM job {job.job_id} failed: {last}; its log: {job.paths.stderr}"
        except UncompletedJobError:
            state = job.state
            if state == GONE:
                reason = (f"SLURM job {job.job_id} left no result and SLURM no longer knows it (cancelled before "
                          f"it started, e.g. scancel of a pending job); the same command runs it")
            else:
                reason = (f"SLURM job {job.job_id} ended {state} before its run finished (e.g. scancel, a node "
                          f"failure or an out-of-memory kill); the same command resumes it")
        say(f"slurm: {reason}")
        if folder is not None:
            mark_failed(folder[0], reason, self._job_config(overrides, folder[0]))
        # Hydra's sweeper raises on a FAILED return; the job's record and the sweep's exit status say it.
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, working_dir=str(folder[0]) if folder else None)

    def _job_config(self, overrides: list[str], folder: Path) -> dict | None:
        """What a job that never started needs for its record: kind, job config, seeds."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            kind, _ = workload_for_config(str(cfg.hydra.job.config_name))
            with open_dict(cfg):
                del cfg["hydra"]
            plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            return {"kind": kind, "config": plain, "seeds": {"seed": plain.get("seed")}}
        except Exception:
            return None


def mark_failed(folder: Path, reason: str, job: dict[str, Any] | None) -> None:
    """Leave the run in `folder` failed with `reason`, unless it completed or failed on its own. Waits
    for the record's lock: a cancelled job's process may still be writing until SLURM kills it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".record.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    say(f"warning: {folder} is still locked by its job; its record is left as it is")
                    return
                time.sleep(1)
        previous = previous_run(folder)
        if previous is not None:
            if previous.get("status") in ("completed", "failed"):
                return
            atomic_write_text(folder / "record.json",
                              json.dumps({**previous, "status": "failed", "error": reason}, indent=2, ensure_ascii=False))
            return
    if job is None:
        return
    # Cancelled before it started: the record it would have opened, failed (no versions: nothing ran).
    record = RunRecord.open(folder, job["kind"], job["config"], seeds=job["seeds"], schema=schema_of(job["kind"]),
                            versions=dict)
    try:
        record.update(error=reason, invocations=[])  # no invocation ran
        record.write("failed")
    finally:
        record.close()


def refusal_line(sbatch_error: str, gpus_per_node: Any) -> str:
    """One line for sbatch refusing a submission: SLURM's reason, and what to type instead."""
    said = "; ".join(line.strip().removeprefix("sbatch: error: ") for line in sbatch_error.splitlines()
                     if line.strip()) or "no reason given"
    if gpus_per_node and any(w in said.lower() for w in ("gres", "gpu", "node configuration is not available")):
        return (f"sbatch refused the jobs' {gpus_per_node} GPU(s) per node ({said}): this cluster or partition has "
                f"no GPUs to give; name a GPU partition with hydra.launcher.partition=NAME, or run on CPUs with "
                f"placement=cpu")
    return (f"sbatch refused the jobs ({said}); check the hydra.launcher.* resources (partition, cpus_per_task, "
            f"mem_gb, timeout_min) against this cluster's limits (sinfo)")
