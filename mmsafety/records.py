"""Run records: `record.json` (rewritten atomically) and `samples.jsonl` (appended, flushed per sample).

These two files are the contract between stages: scoring, attacks and leaderboards read
them and nothing else. A job that is killed leaves a valid record with status `partial`
and every finished sample on disk; running the same job again skips those samples.

A job opens its record with `RunRecord.open(...)`, best as `with RunRecord.open(...) as record:`;
building a `RunRecord` does nothing else (no folder, lock or file). The record's fields are typed
in `mmsafety.record_models`; reading records (`read_samples`, `mmsafety.record_schema`) imports
neither torch nor transformers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import mmsafety
from mmsafety.config_migration import upgrade_config
from mmsafety.errors import UserError
from mmsafety.record_models import SCHEMA_VERSION, new_record
from mmsafety.record_schema import RecordSchema, field_problems, record_problems, sample_problems
from mmsafety.safe_json import JSONRejected, loads_object

__all__ = ["RunRecord", "SCHEMA_VERSION", "atomic_write_bytes", "atomic_write_text", "config_sha256",
           "environment", "read_samples"]


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it, which would race
    with other threads creating files); Linux reports it in /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a uniquely named temporary file in the same folder, fsync, then rename over
    `path`: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a file written in place would get 0666 less the umask, as the rest
        # of a run folder does (teammates on a shared cluster read the records and PNGs).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def same_job(previous: dict, sha: str) -> bool:
    """A previous record is of the job whose config hashes to `sha`: recorded so, or recorded in an
    earlier config layout that reads as that config today (mmsafety.config_migration)."""
    config = previous.get("config")
    return previous.get("config_sha256") == sha or (isinstance(config, dict) and config_sha256(upgrade_config(config)) == sha)


def environment() -> dict[str, Any]:
    """Versions and hardware, so a number can be traced to what produced it. Called when a job opens
    its record; torch is imported here, not at module level, so that reading records never imports it."""
    # heavy, deferred to when this runs: torch, transformers
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "transformers": transformers.__version__, "mmsafety": mmsafety.__version__,
    }
    try:
        # optional: open_clip may be missing, handled here
        import open_clip

        env["open_clip"] = open_clip.__version__
    except ImportError:
        env["open_clip"] = None
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def read_samples(path: Path, problems: list[str] | None = None) -> list[dict]:
    """Complete lines of a samples.jsonl that decode to objects. A torn last line (a kill
    mid-write) is dropped; any other line that cannot be read (not JSON, nested too deep, not
    an object: someone else's file gone wrong) is left out, with its reason in `problems`."""
    if not path.exists():
        return []
    samples = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                samples.append(loads_object(raw))
            except JSONRejected as e:
                if problems is not None:
                    problems.append(f"line {line_no}: {e}")
    return samples


class RunRecord:
    """One job's record in `out_dir`. Keys identify samples, e.g. (task, id).

    `schema` holds the fields the job's workload adds (its caller looks it up, e.g.
    `mmsafety.record_kinds.schema_of(kind)`): on resume, earlier samples that do not fit it are set
    aside and redone. `versions` says what produced the numbers (default: `environment()`).

        with RunRecord.open(out_dir, "goat_bench", config, seeds={"seed": 0}) as record:
            record.add_sample({...})
            record.write("completed")
    """

    def __init__(self, out_dir: str | Path, kind: str, config: dict, *, seeds: dict | None = None,
                 schema: RecordSchema | None = None, versions: Callable[[], dict] = environment):
        self.out_dir = Path(out_dir)
        self.kind, self.config, self.seeds, self.schema, self._versions = kind, config, seeds or {}, schema, versions
        self.record_path = self.out_dir / "record.json"
        self.samples_path = self.out_dir / "samples.jsonl"
        self.data: dict[str, Any] = {}
        self.samples: list[dict] = []
        self.started = 0.0
        self._lock = None
        self._sample_file = None
        self._last_write = 0.0

    @classmethod
    def open(cls, out_dir: str | Path, kind: str, config: dict, *, seeds: dict | None = None,
             schema: RecordSchema | None = None, versions: Callable[[], dict] = environment) -> "RunRecord":
        """Create the folder, take its lock, resume what a previous run of the same config left
        (refusing another config's run), and write a partial record: a job killed from here on
        leaves a valid one."""
        return cls(out_dir, kind, config, seeds=seeds, schema=schema, versions=versions)._open()

    def __enter__(self) -> "RunRecord":
        return self if self._lock is not None else self._open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open(self) -> "RunRecord":
        if self._lock is not None:
            raise RuntimeError(f"the record in {self.out_dir} is already open")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._remove_temp_files_of_killed_writers()
        self.started = time.time()
        previous = self._read_previous()
        sha = config_sha256(self.config)
        if previous and not same_job(previous, sha):
            if previous.get("status") == "failed" and not read_samples(self.samples_path):
                previous = None  # failed before its first sample (e.g. no GPU): the corrected command starts over
            else:
                raise UserError(f"{self.out_dir} holds a run with a different config; pass hydra.run.dir=NEW_DIR, "
                                f"or delete that folder to start over")
        self.data = new_record(
            run_id=previous.get("run_id") if previous else uuid.uuid4().hex, kind=self.kind, config=self.config,
            config_sha256=sha, seeds=self.seeds, versions=self._versions(), started=self.started,
            resumes=(previous or {}).get("timing", {}).get("resumes", -1) + 1, command=" ".join(sys.argv))
        self.previous = previous or {}  # what earlier invocations of this run recorded (accounting, history)
        self.retried_errors = 0  # error samples of earlier invocations that this one sends again
        self._tidy_samples_file()
        self.samples = self._resumable_samples()
        self._sample_file = open(self.samples_path, "a", encoding="utf-8")
        self.write("partial")

    def _take_lock(self):
        """One writer per run folder: a second job on the same folder (the same command started
        twice) would append every sample twice. Released when the job's process ends."""
        lock = open(self.out_dir / ".record.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise UserError(f"another job is writing {self.out_dir}; wait for it to finish, or pass "
                            f"hydra.run.dir=NEW_DIR") from None
        return lock

    def _remove_temp_files_of_killed_writers(self) -> None:
        """A job killed inside `atomic_write_bytes` leaves its `.NAME.XXXX.tmp` behind. This job
        holds the folder's lock, so no writer that could still rename them is alive."""
        for tmp in [*self.out_dir.glob(".*.tmp"), *self.out_dir.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)

    def _read_previous(self) -> dict | None:
        """The record a previous run of this job left, if it is one (a file that is not, e.g. a
        recursion bomb or a record with the wrong types, counts as no record)."""
        try:
            previous = loads_object(self.record_path.read_bytes())
        except (OSError, ValueError):
            return None
        if record_problems(previous, lambda kind: self.schema if kind == self.kind else None) \
                or not isinstance(previous.get("config_sha256"), str):
            return None
        return previous

    def _tidy_samples_file(self) -> None:
        """Cut a torn last line left by a kill, so appends start on a fresh line."""
        if not self.samples_path.exists():
            return
        data = self.samples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(self.samples_path, data[: data.rfind(b"\n") + 1])

    def _resumable_samples(self) -> list[dict]:
        """The samples of a previous run that its scoring can use. Lines it cannot (not JSON, nested
        too deep, wrong types: a file edited or copied from elsewhere) move to
        `samples.rejected.jsonl` and their reasons go into the record, so the job redoes those
        samples instead of failing on them when it scores."""
        if not self.samples_path.exists():
            return []
        samples, kept, rejected, reasons, retried = [], [], [], [], []
        for line_no, raw in enumerate(self.samples_path.read_bytes().splitlines(keepends=True), 1):
            try:
                sample = loads_object(raw)
                wrong = sample_problems(sample, self.schema)
            except JSONRejected as e:
                wrong = [str(e)]
            if not wrong and sample.get("status") == "error":
                # No answer for a reason outside the data (a served failure, out of memory): the job
                # sends it again; the line moves to samples.retried.jsonl and the new result replaces it.
                retried.append(raw)
                continue
            if wrong:
                rejected.append(raw)
                reasons.append(f"line {line_no}: {'; '.join(wrong[:3])}")
            else:
                samples.append(sample)
                kept.append(raw)
        for name, lines in (("samples.rejected.jsonl", rejected), ("samples.retried.jsonl", retried)):
            if lines:
                with open(self.out_dir / name, "ab") as f:
                    f.writelines(lines)
        if rejected or retried:
            atomic_write_bytes(self.samples_path, b"".join(kept))
        if rejected:
            self.data["resume_rejected"] = {"lines": len(rejected), "first_reasons": reasons[:10]}
        self.retried_errors = len(retried)
        return samples

    def done_keys(self, key_fields: Iterable[str]) -> set[tuple]:
        fields = tuple(key_fields)
        return {tuple(s.get(k) for k in fields) for s in self.samples}

    def add_sample(self, sample: dict) -> None:
        """Append one sample and flush it to the OS: a kill after this never loses it."""
        self._sample_file.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
        self._sample_file.flush()
        self.samples.append(sample)

    def checkpoint(self, every_s: float = 2.0) -> None:
        """Refresh the partial record (counts, timing) at most every `every_s` seconds."""
        if time.time() - self._last_write >= every_s:
            self.write()

    def update(self, **fields: Any) -> None:
        """Set record fields. A field the record model types (model, spec, counts, ...) must fit
        it: a job that sets a wrong type is stopped here, not by every reader of its record."""
        wrong = field_problems(fields)
        if wrong:
            raise ValueError(f"record field of the wrong type: {'; '.join(wrong[:3])}")
        self.data.update(fields)

    def write(self, status: str | None = None) -> None:
        if status:
            self.data["status"] = status
        statuses = Counter(s.get("status", "ok") for s in self.samples)
        reasons = Counter(s.get("reason") for s in self.samples if s.get("status") == "skipped")
        self.data["counts"] = {"ok": statuses.get("ok", 0), "skipped": statuses.get("skipped", 0),
                               "errors": statuses.get("error", 0)}
        self.data["skipped_reasons"] = dict(reasons)
        self.data["timing"].update(finished=time.time(), seconds=round(time.time() - self.started, 3))
        atomic_write_text(self.record_path, json.dumps(self.data, indent=2, ensure_ascii=False, default=str))
        self._last_write = time.time()

    def close(self) -> None:
        if self._sample_file is not None and not self._sample_file.closed:
            os.fsync(self._sample_file.fileno())
            self._sample_file.close()
        if self._lock is not None and not self._lock.closed:
            self._lock.close()  # releases the flock
        self._lock = None
