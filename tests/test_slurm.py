"""The SLURM launcher against a real single-node cluster (Debian's slurm-wlm + munge, started by
tests/slurm/cluster.sh), as a user drives it: a sweep submitted with `hydra/launcher=slurm`, an attack
warned twice before its time limit (`scancel --signal=USR2`, what SLURM sends `signal_delay_s` before the
limit), requeued each time by submitit, and resumed from the step it reached; its PNGs and samples equal an
uninterrupted local run of the same config. Skipped (with the reason) where SLURM is not installed or the
tests do not run as root (the daemons need it); `.ci/run` installs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import cli_command, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = Path(__file__).parent / "slurm" / "cluster.sh"
ATTACK = ["images=1", "heldout_prompts=4", "attack.steps=1000", "attack.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the SLURM daemons of tests/slurm/cluster.sh need root")
    was_up = subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    up = subprocess.run(["bash", str(CLUSTER)], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    if not was_up:  # the daemons these tests started end with them
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=60)


def wait_for(predicate, what: str, timeout: float = 300, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_state(job_id: str) -> str:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(r"JobState=(\S+)", shown)
    return match.group(1) if match else "GONE"


def test_an_attack_warned_twice_resumes_from_the_steps_it_reached_and_equals_an_uninterrupted_run(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [*cli_command("mmsafety-attack"), "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30", *ATTACK, f"hydra.sweep.dir={sweep}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "MMSAFETY_LOG_EVERY_S": "1"})  # a progress line a second
    try:
        job_dir = wait_for(lambda: next((p for p in (sweep / ".submitit").glob("*") if p.name.isdigit()), None),
                           "the job's submission")  # .submitit/<job id>/ (beside submitit's pickles)
        job_id, log = job_dir.name, lambda: "\n".join(p.read_text() for p in job_dir.glob("*_log.err"))
        resumed_from, start_marker = [], ""

        def stepping() -> bool:  # a progress line since this start of the job: it is mid-attack
            text = log()
            return "steps in " in text[text.rfind(start_marker) if start_marker else 0:]

        for warning in (1, 2):
            wait_for(stepping, f"the attack's progress (start {warning})", 600)
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            wait_for(lambda: job_state(job_id) == "PENDING", "the requeue")
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)  # skip the requeue delay
            wait_for(lambda: len(re.findall(r"from step (\d+) \(saved attack state\)", log())) >= warning,
                     f"resume {warning}", 300)
            resumed_from = [int(s) for s in re.findall(r"from step (\d+) \(saved attack state\)", log())]
            start_marker = "(saved attack state)"
        out, err = launcher.communicate(timeout=2400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            subprocess.run(["scancel", job_dir.name] if "job_dir" in locals() else ["true"])
    assert launcher.returncode == 0, err[-3000:]
    assert 0 < resumed_from[0] < resumed_from[1] < 1000, resumed_from  # from the step reached, never from 0
    text = log()  # the progress counter of each resumed start goes on from the step it resumed from
    for marker, step in zip(re.finditer(r"\(saved attack state\)", text), resumed_from):
        counted = re.search(r"(\d+)/1000 steps", text[marker.end():])
        assert counted and int(counted.group(1)) > step, (step, counted and counted.group(0))
    assert "sacct" not in err and "accounting storage is disabled" not in err  # quiet polling
    assert f"slurm: job {job_id} running" in err  # state lines come from polls: a short requeue or the end may fall between two

    (run,) = [p.parent for p in sweep.glob("*/record.json")]
    assert json.loads((run / "record.json").read_text())["status"] == "completed"
    local = tmp_path / "local"
    done = run_cli("mmsafety-attack", *ATTACK, f"hydra.run.dir={local}", timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    pngs = lambda folder: {p.name: p.read_bytes() for p in folder.rglob("*.png")}
    assert pngs(run) == pngs(local) and pngs(local)
    samples = lambda folder: [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # wall-clock aside
                              for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert samples(run) == samples(local)


def test_the_sweep_exit_status_follows_the_records_of_jobs_run_on_the_cluster(cluster, tmp_path):
    """A job that fails on the cluster (its data folder does not exist) makes the sweep exit 1 with one
    line naming what did not complete; the good job's record is completed."""
    proc = run_cli("mmsafety-eval", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.mem_gb=1", f"task.root={tmp_path / 'no_such_data'},null", "task=goat_sarcasm",
                   "task.limit=2", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 of 2 job(s) of the sweep did not complete (failed 1)" in proc.stderr
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/record.json"))
    assert statuses == ["completed", "failed"]


def test_a_job_that_hits_a_bug_leaves_its_traceback_in_its_log_and_one_line_in_the_sweep(cluster, tmp_path):
    """An exception that gets past a job's own handling is a bug (a user's mistake is one line in the job's
    log and a failed record, never raised). Its traceback, with the frames where it was raised, goes to
    the job's log; the sweep prints one line naming the exception and that log, no traceback (Hydra's
    would show only its sweeper: the frames do not survive the pickle), and goes on with the other jobs.
    The bug is planted in shard 1's eval by tests/slurm/planted_bug/sitecustomize.py."""
    planted = Path(__file__).parent / "slurm" / "planted_bug"
    sweep = tmp_path / "sweep"
    path = os.pathsep.join(p for p in (str(planted), os.environ.get("PYTHONPATH")) if p)
    proc = run_cli("mmsafety-eval", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.mem_gb=1", "task=goat_sarcasm", "task.limit=2", "shard=0,1,2", "num_shards=3",
                   f"hydra.sweep.dir={sweep}", timeout=900, env={"PYTHONPATH": path, "MMSAFETY_TEST_BUG_IN_SHARD": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if " raised " in x]
    said = re.fullmatch(r"slurm: SLURM job \d+_1 raised RuntimeError: planted bug: index 7 out of range \(a bug, not a "
                        r"mistake in the command: its traceback is in (\S+); please report it\)", line)
    assert said, line
    log = Path(said.group(1)).read_text()
    assert re.search(r"Traceback \(most recent call last\):\n(.*\n)*  File \".*planted_bug/sitecustomize.py\", line "
                     r"\d+, in evaluate\n(.*\n)*RuntimeError: planted bug: index 7 out of range", log), log[-3000:]
    assert "error: 1 of 3 job(s) of the sweep did not complete (failed 1)" in proc.stderr, proc.stderr[-3000:]
    records = {int(p.parent.name.split("-")[0]): json.loads(p.read_text()) for p in sweep.glob("*/record.json")}
    assert {i: r["status"] for i, r in records.items()} == {0: "completed", 1: "failed", 2: "completed"}
    assert records[1]["error"] == "RuntimeError: planted bug: index 7 out of range"
    rows = json.loads((sweep / "leaderboard.json").read_text())["goat_bench"]  # the sweep ran to its end
    assert sorted((row["status"], row.get("error")) for row in rows) == [
        ("failed", "RuntimeError: planted bug: index 7 out of range"), ("partial (shards 2/3)", None)], rows


@pytest.mark.parametrize("placement, gpus", [(["placement=cuda"], 1), (["placement=auto"], 1),
                                             (["placement=auto", "placement.gpus=2"], 2)])
def test_gpu_placements_ask_slurm_for_their_gpus_in_the_submission_script(cluster, tmp_path, placement, gpus):
    """placement=cuda and placement=auto submit with --gpus-per-node=placement.gpus (1 unless raised for a
    model sharded over several), beside the launcher's documented 8 CPUs, 64 GB and 4 hours; this node
    declares no GPU, so sbatch refuses the job: one line says so and what to type instead (no
    traceback), and the generated submission script is checked."""
    sweep = tmp_path / "sweep"
    proc = run_cli("mmsafety-eval", "-m", "hydra/launcher=slurm", *placement, "task=goat_sarcasm",
                   "task.limit=1", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if "error" in x.lower()]  # sbatch's own echo is not repeated
    assert line.startswith(f"error: sbatch refused the jobs' {gpus} GPU(s) per node (") and "placement=cpu" in line \
        and "hydra.launcher.partition=" in line, proc.stderr
    assert "Traceback" not in proc.stderr
    (script,) = sweep.glob(".submitit/.submission_file_*.sh")
    sbatch = set(re.findall(r"^#SBATCH (--\S+)$", script.read_text(), re.M))
    assert {f"--gpus-per-node={gpus}", "--cpus-per-task=8", "--mem=64GB", "--time=240"} <= sbatch, sbatch
    assert not list(sweep.glob("*/record.json"))  # nothing ran


def array_tasks() -> dict[str, str]:
    """'ARRAYJOB_TASK' -> state, for every array task the controller knows (pending ones one by one)."""
    shown = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True).stdout
    return dict(line.split("|", 1) for line in shown.split() if "_" in line.split("|", 1)[0])


def test_a_16_job_array_runs_4_at_once_cancelled_jobs_fail_with_their_reason_and_a_rerun_resumes_only_them(
        cluster, tmp_path):
    """Issue 25, item 5. 16 GOAT shards with hydra.launcher.array_parallelism=4 on a node that declares 8
    CPUs: never more than 4 run at once, and 4 do. Two running jobs and one pending job are cancelled with
    scancel: the sweep exits 1, their records (and the leaderboard) say failed with SLURM's reason, the
    other 13 complete. The same command again submits only those 3, leaves the 13 records untouched, and
    ends with all 16 completed."""
    sweep = tmp_path / "sweep"
    shards = [f"shard={','.join(map(str, range(16)))}", "num_shards=16", "task=goat_sarcasm", "task.limit=32"]
    command = [*cli_command("mmsafety-eval"), "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
               "hydra.launcher.mem_gb=1", "hydra.launcher.array_parallelism=4", *shards, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    with open(tmp_path / "first.err", "w") as err_file:  # a file, not a pipe nobody reads while polling
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_file, text=True, env=env)
    most_running, cancelled, deadline = 0, [], time.monotonic() + 1800
    try:
        while first.poll() is None and time.monotonic() < deadline:
            tasks = array_tasks()
            running = sorted(t for t, state in tasks.items() if state == "RUNNING")
            most_running = max(most_running, len(running))
            if not cancelled and len(running) >= 2:
                pending = sorted((t for t, state in tasks.items() if state == "PENDING"),
                                 key=lambda t: int(t.split("_")[1]))
                assert pending, tasks  # 4 at most run: the rest wait
                cancelled = [*running[:2], pending[-1]]
                subprocess.run(["scancel", *cancelled], check=True)
            time.sleep(0.5)
    finally:
        if first.poll() is None:
            first.kill()
            subprocess.run(["scancel", "--name=eval"])
    err = (tmp_path / "first.err").read_text()
    assert first.returncode is not None, f"the sweep did not end within 30 minutes: {err[-3000:]}"
    assert most_running == 4, most_running  # the node could run 8: the array's limit is what holds them to 4
    assert first.returncode == 1, err[-3000:]
    assert "error: 3 of 16 job(s) of the sweep did not complete (failed 3)" in err, err[-3000:]

    def records() -> dict[int, dict]:
        return {int(p.parent.name.split("-")[0]): json.loads(p.read_text()) for p in sweep.glob("*/record.json")}

    cancelled_jobs = {int(t.split("_")[1]) for t in cancelled}  # array task i is job i of the sweep
    after_first = records()
    assert sorted(after_first) == list(range(16))
    assert {i for i, r in after_first.items() if r["status"] == "failed"} == cancelled_jobs
    for i in cancelled_jobs:  # a pending array task cancelled before it was split off leaves no trace in SLURM
        said = r"(ended CANCELLED|left no result and SLURM no longer knows it \(cancelled before it started)"
        assert re.search(r"SLURM job \d+_%d %s" % (i, said), after_first[i]["error"]), after_first[i]
    rows = json.loads((sweep / "leaderboard.json").read_text())["goat_bench"]
    failed = [row for row in rows if row["status"].startswith("failed")]  # a job cancelled before it wrote its
    assert failed and all(re.match(r"SLURM job \d+_\d+ ", row["error"]) for row in failed), rows  # spec: a row apart
    finished = {p.parent.name: p.read_bytes() for p in sweep.glob("*/record.json")
                if json.loads(p.read_text())["status"] == "completed"}

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep: 13 of 16 job(s) already completed" in again.stderr and "submitting the other 3" in again.stderr
    assert {p.parent.name: p.read_bytes() for p in sweep.glob("*/record.json") if p.parent.name in finished} \
        == finished  # not run again
    assert {r["status"] for r in records().values()} == {"completed"}
    (row,) = json.loads((sweep / "leaderboard.json").read_text())["goat_bench"]
    assert row["status"] == "completed", row
