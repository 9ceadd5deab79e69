"""The eval and the judge stages under a real requeue (issue 25, item 2), on the single-node cluster of
tests/slurm/cluster.sh: a job warned twice mid-run (`scancel --signal=USR2`, what SLURM sends
`signal_delay_s` before a time limit) holds the signal to the end of the sample being scored, writes
it, and is requeued by submitit; the requeued job resumes after the samples written, judging none
twice and losing none, and ends `completed` with a samples.jsonl byte-identical to an uninterrupted
local run of the same config (both stages are deterministic on the CPU and the resumed job walks the
same order in the same batches, so equal bytes, not merely equal sets, are what to expect).

The jobs are sized to take tens of seconds (no timed sleeps): the test waits for samples to appear
before each signal, so it signals mid-run whatever the machine's load."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli_command, run_cli
from tests.test_slurm import cluster, job_state, wait_for  # noqa: F401  (the module's cluster fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=30"]
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0"}
STOPPED = r"SIGUSR2: stopping after (\d+) of (\d+) {what} \(all written\)"


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def warned_twice(sweep: Path, command: list[str], total: int, what: str) -> tuple[Path, str, list[int], list[int]]:
    """Submit `command` (a one-job sweep into `sweep`), warn its job twice with USR2 once it has written
    samples since its (re)start, and let submitit requeue it. Returns the job's run folder, its log, the
    sample counts each stop said it had written, and the counts samples.jsonl held while it was requeued."""
    err_path = sweep.parent / f"{sweep.name}.err"
    with open(err_path, "w") as err_file:  # a file, not a pipe nobody reads while the test polls
        launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_file, env=ENV)
    job_dir = None
    try:
        job_dir = wait_for(lambda: next((p for p in (sweep / ".submitit").glob("*") if p.name.isdigit()), None),
                           "the job's submission")
        job_id = job_dir.name
        log = lambda: "\n".join(p.read_text() for p in job_dir.glob("*_log.err"))  # noqa: E731
        samples = wait_for(lambda: next(sweep.glob("*/samples.jsonl"), None), "the job's samples.jsonl", 600)
        stopped_at, held_while_pending, written = [], [], 0
        for warning in (1, 2):
            at_least = written + max(2, total // 20)  # samples written by this start of the job: it is mid-run
            wait_for(lambda: lines(samples) >= at_least, f"{at_least} samples (start {warning})", 600, every=0.1)
            assert lines(samples) < total, f"the job finished before warning {warning}: make it bigger"
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            wait_for(lambda: job_state(job_id) == "PENDING", "the requeue")
            held_while_pending.append(lines(samples))
            stops = lambda: [int(n) for n, _ in re.findall(STOPPED.format(what=what), log())]  # noqa: E731
            stopped_at = wait_for(lambda: len(stops()) >= warning and stops(), f"stop {warning} in the job's log")
            written = held_while_pending[-1]
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)  # skip the delay
        launcher.wait(timeout=1800)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            if job_dir is not None:
                subprocess.run(["scancel", job_dir.name])
    err = err_path.read_text()
    assert launcher.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return samples.parent, log(), stopped_at, held_while_pending


def test_an_eval_warned_twice_resumes_after_the_memes_it_wrote_and_equals_an_uninterrupted_run(cluster, tmp_path):
    """2,000 synthetic memes in batches of 4 (about 20 s on this machine's CPU)."""
    config = ["task=goat_all", "task.synthetic_per_task=400", "batch_size=4"]
    sweep = tmp_path / "sweep"
    run, log, stopped_at, pending = warned_twice(
        sweep, [*cli_command("mmsafety-eval"), *SLURM, *config, f"hydra.sweep.dir={sweep}"], 2000, "memes")
    # Each stop wrote every meme it had scored and scored none after: the file held that many while the
    # job waited to start again, and the requeued job started from exactly there.
    assert stopped_at == pending and 0 < stopped_at[0] < stopped_at[1] < 2000, (stopped_at, pending)
    resumed = [int(n) for n in re.findall(r"2000 memes in 5 task\(s\) from \S+; (\d+) already done", log)]
    assert resumed == [0, *stopped_at], resumed
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "completed" and record["timing"]["resumes"] == 2, record["status"]
    assert [i["status"] for i in record["invocations"]] == ["partial", "partial", "completed"]

    local = tmp_path / "local"
    done = run_cli("mmsafety-eval", *config, f"hydra.run.dir={local}", timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "samples.jsonl").read_bytes() == (local / "samples.jsonl").read_bytes()


def test_a_judge_warned_twice_resumes_after_the_images_it_judged_and_equals_an_uninterrupted_run(cluster, tmp_path):
    """mmsafety-judge on the cluster over a local attack run of 48 images (one step each: the judging, 32
    held-out prompts per image, is what takes the time)."""
    attack = tmp_path / "attack"
    crafted = run_cli("mmsafety-attack", "images=48", "attack.steps=1", f"hydra.run.dir={attack}", timeout=1200)
    assert crafted.returncode == 0, crafted.stderr[-3000:]
    sweep = tmp_path / "sweep"
    run, log, stopped_at, pending = warned_twice(
        sweep, [*cli_command("mmsafety-judge"), *SLURM, f"attack_run={attack}", f"hydra.sweep.dir={sweep}"], 48,
        "judged images")
    assert stopped_at == pending and 0 < stopped_at[0] < stopped_at[1] < 48, (stopped_at, pending)
    # each start judged only the images the ones before it had not written
    judged = [int(n) for n in re.findall(r"judged (\d+) crafted image\(s\) from ", log)]
    assert judged == [48 - stopped_at[1]], (judged, stopped_at)
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "completed" and record["timing"]["resumes"] == 2, record["status"]
    assert [i["status"] for i in record["invocations"]] == ["partial", "partial", "completed"]

    local = tmp_path / "local"
    done = run_cli("mmsafety-judge", f"attack_run={attack}", f"hydra.run.dir={local}", timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "samples.jsonl").read_bytes() == (local / "samples.jsonl").read_bytes()
    assert sorted(p.name for p in (run / "images").iterdir()) == sorted(p.name for p in (local / "images").iterdir())
