"""record.json is written atomically; samples.jsonl survives kills; reruns resume; opening a record
is the only thing that touches the disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmsafety.errors import UserError
from mmsafety.records import RunRecord, atomic_write_text, read_samples

NO_ENV = {"python": "3", "torch": None}  # versions without importing torch: these tests only write records


def test_record_fields(tmp_path):
    with RunRecord.open(tmp_path, "test", {"a": 1}, seeds={"seed": 3}) as rec:
        rec.add_sample({"id": "x", "status": "ok"})
        rec.add_sample({"id": "y", "status": "skipped", "reason": "corrupt image"})
        rec.write("completed")
    data = json.loads((tmp_path / "record.json").read_text())
    assert list(data) == ["schema_version", "run_id", "kind", "status", "config", "config_sha256", "model", "spec",
                          "metrics", "counts", "skipped_reasons", "seeds", "versions", "timing", "command"]
    assert data["status"] == "completed" and data["counts"] == {"ok": 1, "skipped": 1, "errors": 0}
    assert data["skipped_reasons"] == {"corrupt image": 1} and data["seeds"] == {"seed": 3}
    assert {"python", "torch", "transformers", "open_clip", "mmsafety"} <= set(data["versions"])


def test_building_a_record_touches_nothing_and_imports_no_torch(tmp_path):
    """The constructor only names things: no folder, lock, file rewrite, torch import or CUDA query;
    `open` (or entering `with`) does the work."""
    code = f"""
import sys
from pathlib import Path
from mmsafety.records import RunRecord
folder = Path({str(tmp_path / 'run')!r})
record = RunRecord(folder, "test", {{"a": 1}})
assert not folder.exists(), "the constructor created the folder"
assert "torch" not in sys.modules, "the constructor imported torch"
with RunRecord(folder, "test", {{"a": 1}}, versions=lambda: {{}}) as record:
    assert (folder / "record.json").is_file() and (folder / ".record.lock").is_file()
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_lock_is_released_when_the_with_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="job crashed"):
        with RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV):
            raise RuntimeError("job crashed")
    with RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV) as again:  # not "another job is writing"
        assert again.data["timing"]["resumes"] == 1


def test_a_field_of_the_wrong_type_is_refused_when_set_not_when_read(tmp_path):
    with RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV) as rec:
        with pytest.raises(ValueError, match=r"spec\.shard\.index is 'first', not an integer"):
            rec.update(spec={"shard": {"index": "first", "count": 2}})
        with pytest.raises(ValueError, match=r"model\.name is 3, not a string"):
            rec.update(model={"name": 3})
        rec.update(spec={"shard": {"index": 0, "count": 2}}, served={"anything": object()})  # a job's own field: free
        rec.write()
    assert json.loads((tmp_path / "record.json").read_text())["spec"] == {"shard": {"index": 0, "count": 2}}


def test_atomic_write_keeps_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_text(path, '{"status": "partial"}')

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_text(path, '{"status": "completed", "big": "' + "x" * 10000 + '"}')
    assert json.loads(path.read_text()) == {"status": "partial"}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"], "no temporary file left behind"


def test_torn_last_line_is_dropped_and_run_resumes(tmp_path):
    with RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV) as rec:
        rec.add_sample({"task": "t", "id": "1", "status": "ok"})
        rec.add_sample({"task": "t", "id": "2", "status": "ok"})
        rec.write()
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"task": "t", "id": "3", "sta')  # killed mid-write
    with RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV) as again:
        assert again.done_keys(("task", "id")) == {("t", "1"), ("t", "2")}
        again.add_sample({"task": "t", "id": "3", "status": "ok"})
    assert [s["id"] for s in read_samples(tmp_path / "samples.jsonl")] == ["1", "2", "3"]
    assert again.data["run_id"] == rec.data["run_id"] and again.data["timing"]["resumes"] == 1


def test_resuming_with_another_config_is_refused(tmp_path):
    with RunRecord.open(tmp_path, "test", {"eps": 8}, versions=lambda: NO_ENV) as rec:
        rec.write()
    with pytest.raises(UserError, match="different config"):
        RunRecord.open(tmp_path, "test", {"eps": 16}, versions=lambda: NO_ENV)
    RunRecord.open(tmp_path, "test", {"eps": 8}, versions=lambda: NO_ENV).close()  # the refusal left no lock behind


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path):
    first = RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV)
    with pytest.raises(UserError, match="another job is writing"):
        RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV)
    first.close()
    RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV).close()  # free again once the first job is done


def test_temp_files_of_a_killed_writer_are_removed_on_resume(tmp_path):
    """A SIGKILL inside an atomic write leaves `.NAME.XXXX.tmp`; the next job on the folder (it
    holds the lock, so no writer is alive) removes it and leaves everything else alone."""
    RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV).close()
    debris = [tmp_path / ".record.json.k1ll3d.tmp", tmp_path / "adversarial" / ".0_ab12.png.x9.tmp"]
    debris[1].parent.mkdir()
    kept = [tmp_path / "adversarial" / "0_ab12.png", tmp_path / "notes.tmp"]
    for path in debris + kept:
        path.write_bytes(b"x")
    RunRecord(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV)  # built, not opened: nothing removed yet
    assert all(path.exists() for path in debris)
    RunRecord.open(tmp_path, "test", {"a": 1}, versions=lambda: NO_ENV).close()
    assert not any(path.exists() for path in debris)
    assert all(path.exists() for path in kept)
