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
    up = subprocess.run(["bash", str(CLUSTER)], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr


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


def test_cuda_placement_asks_slurm_for_a_gpu_in_the_submission_script(cluster, tmp_path):
    """placement=cuda submits with --gpus-per-node=1; this node declares no GPU, so sbatch refuses the job
    and the sweep fails, leaving the generated submission script, which is what is checked."""
    sweep = tmp_path / "sweep"
    proc = run_cli("mmsafety-eval", "-m", "hydra/launcher=slurm", "placement=cuda", "task=goat_sarcasm",
                   "task.limit=1", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode != 0
    (script,) = sweep.glob(".submitit/.submission_file_*.sh")
    assert re.search(r"^#SBATCH --gpus-per-node=1$", script.read_text(), re.M), script.read_text()
    assert not list(sweep.glob("*/record.json"))  # nothing ran
