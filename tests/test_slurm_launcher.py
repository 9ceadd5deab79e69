"""mmsafety's SLURM launcher without a cluster: how a job that ended without a result (scancel, a node
failure) is recorded, and sbatch's refusals as one line. On a real cluster: tests/test_slurm.py."""

from __future__ import annotations

import fcntl
import json
import threading
import time

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

from mmsafety.cli import slurm_launcher  # noqa: E402
from mmsafety.cli.slurm_launcher import mark_failed, refusal_line  # noqa: E402
from mmsafety.record_kinds import schema_of  # noqa: E402
from mmsafety.records import RunRecord  # noqa: E402

CONFIG = {"seed": 0, "task": {"name": "goat_sarcasm"}}
REASON = "SLURM job 7_3 ended CANCELLED before its run finished"


def a_run(folder, status=None, samples=0):
    record = RunRecord.open(folder, "goat_bench", CONFIG, seeds={"seed": 0}, schema=schema_of("goat_bench"),
                            versions=dict)
    for i in range(samples):
        record.add_sample({"task": "sarcasm", "id": str(i), "status": "ok", "label": 1, "pred": 1, "correct": True})
    if status:
        record.write(status)
    record.close()
    return json.loads((folder / "record.json").read_text())


def test_a_partial_run_is_left_failed_with_the_reason_and_its_samples_resume(tmp_path):
    a_run(tmp_path, samples=2)  # killed mid-run: its record says partial
    mark_failed(tmp_path, REASON, None)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "failed" and record["error"] == REASON
    again = RunRecord.open(tmp_path, "goat_bench", CONFIG, seeds={"seed": 0}, schema=schema_of("goat_bench"),
                           versions=dict)
    assert len(again.samples) == 2  # the same command goes on from them
    again.close()


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_run_that_ended_on_its_own_keeps_its_record(tmp_path, status):
    before = a_run(tmp_path, status=status, samples=1)
    mark_failed(tmp_path, REASON, None)
    assert json.loads((tmp_path / "record.json").read_text()) == before


def test_a_job_cancelled_before_it_started_gets_a_failed_record_of_its_config(tmp_path):
    mark_failed(tmp_path / "3-job", REASON, {"kind": "goat_bench", "config": CONFIG, "seeds": {"seed": 0}})
    record = json.loads((tmp_path / "3-job" / "record.json").read_text())
    assert (record["status"], record["error"], record["config"], record["invocations"]) == ("failed", REASON, CONFIG, [])
    # the job's own run of that config resumes this record (same config), not refused as another run's
    assert a_run(tmp_path / "3-job", status="completed")["timing"]["resumes"] == 1


def test_it_waits_for_the_killed_job_to_let_go_of_its_record(tmp_path, monkeypatch):
    """SLURM kills a cancelled job KillWait seconds after SIGTERM; until then it may still write."""
    a_run(tmp_path, samples=1)
    lock = open(tmp_path / ".record.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    released = []

    def job_ends():
        time.sleep(1.5)
        released.append(time.monotonic())
        lock.close()

    threading.Thread(target=job_ends).start()
    mark_failed(tmp_path, REASON, None)
    assert released and json.loads((tmp_path / "record.json").read_text())["status"] == "failed"

    monkeypatch.setattr(slurm_launcher, "LOCK_WAIT_S", 0.5)  # a job that never lets go: left as it is
    a_run(tmp_path / "stuck", samples=1)
    with open(tmp_path / "stuck" / ".record.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        mark_failed(tmp_path / "stuck", REASON, None)
    assert json.loads((tmp_path / "stuck" / "record.json").read_text())["status"] == "partial"


def test_sbatch_refusals_are_one_line_saying_what_to_type():
    gpu = refusal_line("sbatch: error: Invalid generic resource (gres) specification\n", 1)
    assert gpu == ("sbatch refused the jobs' 1 GPU(s) per node (Invalid generic resource (gres) specification): "
                   "this cluster or partition has no GPUs to give; name a GPU partition with "
                   "hydra.launcher.partition=NAME, or run on CPUs with placement=cpu")
    other = refusal_line("sbatch: error: Batch job submission failed: Requested time limit is invalid\n", 0)
    assert "\n" not in other and other.startswith("sbatch refused the jobs (Batch job submission failed: Requested "
                                                  "time limit is invalid); check the hydra.launcher.*")
