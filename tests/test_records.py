"""record.json is written atomically; samples.jsonl survives kills; reruns resume."""

from __future__ import annotations

import json
import os

import pytest

from mmsafety.errors import UserError
from mmsafety.records import RunRecord, atomic_write_text, read_samples


def test_record_fields(tmp_path):
    rec = RunRecord(tmp_path, "test", {"a": 1}, seeds={"seed": 3})
    rec.add_sample({"id": "x", "status": "ok"})
    rec.add_sample({"id": "y", "status": "skipped", "reason": "corrupt image"})
    rec.write("completed")
    data = json.loads((tmp_path / "record.json").read_text())
    for key in ("schema_version", "run_id", "status", "config", "model", "spec", "metrics", "counts", "seeds",
                "versions", "timing"):
        assert key in data
    assert data["status"] == "completed" and data["counts"] == {"ok": 1, "skipped": 1, "errors": 0}
    assert data["skipped_reasons"] == {"corrupt image": 1}
    assert {"python", "torch", "transformers", "open_clip", "mmsafety"} <= set(data["versions"])


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
    rec = RunRecord(tmp_path, "test", {"a": 1})
    rec.add_sample({"task": "t", "id": "1", "status": "ok"})
    rec.add_sample({"task": "t", "id": "2", "status": "ok"})
    rec.write()
    rec.close()
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"task": "t", "id": "3", "sta')  # killed mid-write
    again = RunRecord(tmp_path, "test", {"a": 1})
    assert again.done_keys(("task", "id")) == {("t", "1"), ("t", "2")}
    again.add_sample({"task": "t", "id": "3", "status": "ok"})
    again.close()
    assert [s["id"] for s in read_samples(tmp_path / "samples.jsonl")] == ["1", "2", "3"]
    assert again.data["run_id"] == rec.data["run_id"] and again.data["timing"]["resumes"] == 1


def test_resuming_with_another_config_is_refused(tmp_path):
    rec = RunRecord(tmp_path, "test", {"eps": 8})
    rec.write()
    rec.close()
    with pytest.raises(UserError, match="different config"):
        RunRecord(tmp_path, "test", {"eps": 16})


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path):
    first = RunRecord(tmp_path, "test", {"a": 1})
    with pytest.raises(UserError, match="another job is writing"):
        RunRecord(tmp_path, "test", {"a": 1})
    first.close()
    RunRecord(tmp_path, "test", {"a": 1}).close()  # free again once the first job is done


def test_temp_files_of_a_killed_writer_are_removed_on_resume(tmp_path):
    """A SIGKILL inside an atomic write leaves `.NAME.XXXX.tmp`; the next job on the folder (it
    holds the lock, so no writer is alive) removes it and leaves everything else alone."""
    record = RunRecord(tmp_path, "test", {"a": 1})
    record.close()
    debris = [tmp_path / ".record.json.k1ll3d.tmp", tmp_path / "adversarial" / ".0_ab12.png.x9.tmp"]
    debris[1].parent.mkdir()
    kept = [tmp_path / "adversarial" / "0_ab12.png", tmp_path / "notes.tmp"]
    for path in debris + kept:
        path.write_bytes(b"x")
    RunRecord(tmp_path, "test", {"a": 1}).close()
    assert not any(path.exists() for path in debris)
    assert all(path.exists() for path in kept)
