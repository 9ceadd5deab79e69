"""A cluster's warning (SIGUSR2) in the middle of the GOAT eval, in process and without a cluster (on
a real one: tests/test_slurm_requeue.py): the signal is held until the batch being scored is written,
then handed on (submitit's handler requeues and exits); the same run resumes after the written memes and
its samples.jsonl is byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal

import pytest

import goat_bench.evaluate
from goat_bench.cli import run_eval

CONFIG = ["task=goat_sarcasm", "task.limit=40", "batch_size=4"]


class Requeued(BaseException):
    """What submitit's handler does once it has requeued the job (sys.exit)."""


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")
def test_a_warning_mid_batch_writes_that_batch_then_requeues_and_the_resumed_eval_equals_an_uninterrupted_one(
        tmp_path, monkeypatch):
    run_eval(tmp_path / "reference", *CONFIG)
    real, batches = goat_bench.evaluate._score_batch, []

    def scoring(adapter, batch, *args):
        batches.append(len(batch))
        if len(batches) == 3:
            os.kill(os.getpid(), signal.SIGUSR2)  # arrives before this batch is scored
        return real(adapter, batch, *args)

    def requeue(signum, frame):
        raise Requeued(signum)

    monkeypatch.setattr(goat_bench.evaluate, "_score_batch", scoring)
    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Requeued):
            run_eval(tmp_path / "run", *CONFIG)
        assert signal.getsignal(signal.SIGUSR2) is requeue  # the handler it held the signal from is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    run = tmp_path / "run"
    assert batches == [4, 4, 4]  # the third batch was scored, and nothing after it
    assert len((run / "samples.jsonl").read_text().splitlines()) == 12  # ... and written
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "partial" and record["counts"]["ok"] == 12
    assert [i["status"] for i in record["invocations"]] == ["partial"]

    monkeypatch.setattr(goat_bench.evaluate, "_score_batch", real)
    run_eval(run, *CONFIG)
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "completed" and [i["status"] for i in record["invocations"]] == ["partial", "completed"]
    assert (run / "samples.jsonl").read_bytes() == (tmp_path / "reference" / "samples.jsonl").read_bytes()
