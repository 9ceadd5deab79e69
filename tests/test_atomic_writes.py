"""Atomic writes under a real kill: a child process SIGKILLed in the middle of rewriting a file leaves
the old file whole, byte for byte (issue 36 item 6; tests/test_records.py only makes os.replace fail).

The kill is made deterministic by a hook in the child: a profile function (`sys.setprofile`) waits for
the first file `write` to return, tells the parent over a pipe, and sleeps. At that moment the new
bytes (4 MiB: past any buffer, so they reach the kernel) are written but the write has not finished:
an atomic writer has them in a temporary file; a writer that opens the destination itself
(`path.write_bytes`, or open(path, "wb") then rename) has already truncated or replaced it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from mmsafety.record_kinds import schema_of
from mmsafety.records import RunRecord

CHILD = r"""
import io, os, sys, time
from pathlib import Path
from mmsafety.records import atomic_write_bytes

target, ready = Path(sys.argv[1]), int(sys.argv[2])

def pause_after_first_file_write(frame, event, arg):
    # c_return of a file object's write(): the payload is in the kernel, the writer has not finished.
    if event == "c_return" and getattr(arg, "__name__", "") == "write" and isinstance(getattr(arg, "__self__", None), io.IOBase):
        sys.setprofile(None)
        os.write(ready, b"paused\n")
        time.sleep(600)

new = b"N" * (4 << 20)
sys.setprofile(pause_after_first_file_write)
atomic_write_bytes(target, new)
sys.setprofile(None)
os.write(ready, b"finished without pausing\n")
"""


def kill_mid_write(target: Path) -> str:
    """Run the child on `target`, SIGKILL it at the pause; what it said over the pipe."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(write_end)], pass_fds=(write_end,),
                             cwd=Path(__file__).resolve().parents[1])
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 60)
        said = os.read(read_end, 100).decode() if ready else "nothing within 60 s"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        os.close(read_end)
    assert child.returncode == -signal.SIGKILL
    return said.strip()


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "record.json"
    old = json.dumps({"status": "partial", "counts": {"ok": 7}}, indent=2).encode()
    target.write_bytes(old)
    assert kill_mid_write(target) == "paused"
    assert target.read_bytes() == old
    # The killed writer's temporary file holds the bytes it had written; it is not the target.
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(p.name.startswith(".record.json.") and p.suffix == ".tmp" for p in leftovers)
    assert sum(p.stat().st_size for p in leftovers) > 0


def test_the_next_job_on_the_folder_resumes_the_old_record_and_removes_the_temporary_file(tmp_path):
    first = RunRecord.open(tmp_path, "goat_bench", {"x": 1}, schema=schema_of("goat_bench"))
    first.add_sample({"task": "sarcasm", "id": "a", "status": "ok", "label": 1, "pred": 1, "correct": True})
    first.write("partial")
    first.close()
    old = (tmp_path / "record.json").read_bytes()
    assert kill_mid_write(tmp_path / "record.json") == "paused"
    assert (tmp_path / "record.json").read_bytes() == old
    resumed = RunRecord.open(tmp_path, "goat_bench", {"x": 1}, schema=schema_of("goat_bench"))
    try:
        assert resumed.data["run_id"] == json.loads(old)["run_id"]  # the old record was read, not lost
        assert resumed.done_keys(("task", "id")) == {("sarcasm", "a")}
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        resumed.close()
