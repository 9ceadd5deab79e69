"""The console scripts' run folders, refusals, interruptions and messages (issue 21, items 2, 3,
10-13): what a newcomer meets in the first hour, run as a user would (subprocesses, no TTY)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmsafety.app import INTERRUPTED, _compose, _register
from mmsafety.cli.run_identity import job_config_sha256
from mmsafety.records import RunRecord, read_samples
from tests.helpers import cli_command, run_cli

EVAL, ATTACK = cli_command("mmsafety-eval"), cli_command("mmsafety-attack")
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0"}


def run_dir(config: str, *overrides: str) -> str:
    _register()
    return _compose(config, list(overrides), with_hydra=True).hydra.run.dir


def test_run_folders_differ_whenever_the_config_does():
    base = run_dir("eval")
    changed = [run_dir("eval", o) for o in ("task.root=/data/goat", "task.limit=5", "placement=auto", "batch_size=4")]
    assert len({base, *changed}) == 5, "each of these changes the results, so each needs its own folder"
    assert run_dir("eval") == base, "the same command finds the same folder (resume)"
    assert base.startswith("runs/eval/organism/goat_all-logprob-seed0-")
    attack = run_dir("attack", "attack.eps=8/255")
    assert attack != run_dir("attack", "attack.eps=8/255", "images=4") and attack == run_dir("attack", "attack.eps=8/255")
    _register()
    cfg = _compose("eval", ["task.limit=5"], with_hydra=True)
    assert cfg.hydra.run.dir.endswith("-" + job_config_sha256(cfg)[:8])


def test_a_failed_run_without_samples_is_replaced_but_a_real_conflict_is_refused(tmp_path):
    from mmsafety.errors import UserError

    failed = RunRecord.open(tmp_path / "failed", "goat_bench", {"model": "llava_1_5_7b", "placement": "cuda"})
    failed.update(error="no GPU")
    failed.write("failed")
    failed.close()
    corrected = RunRecord.open(tmp_path / "failed", "goat_bench", {"model": "llava_1_5_7b", "placement": "cpu"})
    assert corrected.data["config"]["placement"] == "cpu" and corrected.data["timing"]["resumes"] == 0
    corrected.close()

    with_samples = RunRecord.open(tmp_path / "work", "goat_bench", {"limit": 2})
    with_samples.add_sample({"task": "sarcasm", "id": "1", "status": "ok", "label": 1, "pred": 1})
    with_samples.write("failed")
    with_samples.close()
    with pytest.raises(UserError, match="different config"):
        RunRecord.open(tmp_path / "work", "goat_bench", {"limit": 3})


@pytest.mark.slow
def test_eval_run_folder_log_progress_and_refusal(tmp_path):
    """Default folder (config hash), eval.log holding the run's lines, one progress line per run off
    a terminal (a resumed run too), and another config refused before Hydra touches the folder."""
    proc = subprocess.run([*EVAL, "task=goat_sarcasm", "task.limit=4"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder,) = (tmp_path / "runs" / "eval" / "organism").iterdir()
    record = json.loads((folder / "record.json").read_text())
    assert folder.name == f"goat_sarcasm-logprob-seed0-{record['config_sha256'][:8]}"
    log = (folder / "eval.log").read_text()
    assert "4 memes in 1 task(s)" in log and "Acc / F1" in log and f"record: {folder / 'record.json'}" in log
    assert "deprecated" not in proc.stderr  # transformers' past_key_values warning

    # Resume after losing 2 samples: the bar's line is printed once, not once per refresh plus on close.
    samples = (folder / "samples.jsonl").read_text().splitlines(keepends=True)
    (folder / "samples.jsonl").write_text("".join(samples[:2]))
    again = subprocess.run([*EVAL, "task=goat_sarcasm", "task.limit=4"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 already done" in again.stderr
    progress_lines = [line for line in again.stderr.splitlines() if "organism logprob" in line]
    # The counter carries on from the 2 already done (issue 25): 4 of the task's 4, not 2 of 2.
    assert progress_lines == [progress_lines[0]] and "4/4 memes done" in progress_lines[0], again.stderr
    assert "\r" not in again.stderr
    assert len(read_samples(folder / "samples.jsonl")) == 4

    # Another config pointed at this folder: refused in one line; nothing in the folder changes.
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    refused = subprocess.run([*EVAL, "task=goat_sarcasm", "task.limit=5", f"hydra.run.dir={folder}"], cwd=tmp_path,
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {folder} holds a completed run with a different config (its record.json); "
        f"pass hydra.run.dir=NEW_DIR, or delete that folder to start over"]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_sweep_into_another_sweeps_folder_is_refused_before_anything_is_written(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli("mmsafety-eval", "-m", "task=goat_sarcasm,goat_misogyny", "task.limit=2", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    other = run_cli("mmsafety-eval", "-m", "task=goat_sarcasm,goat_misogyny", "task.limit=3", f"hydra.sweep.dir={sweep}")
    assert other.returncode == 2
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith(f"error: {sweep} holds runs of another sweep") and "hydra.sweep.dir=NEW_DIR" in line
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before  # .hydra/, multirun.yaml untouched
    same = run_cli("mmsafety-eval", "-m", "task=goat_sarcasm,goat_misogyny", "task.limit=2", f"hydra.sweep.dir={sweep}")
    assert same.returncode == 0 and same.stderr.count("2 already done") == 2, same.stderr[-2000:]


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_exits_non_zero(tmp_path):
    proc = run_cli("mmsafety-eval", "-m", f"task.root={tmp_path / 'no_such_data'},null", "task=goat_sarcasm",
                   "task.limit=2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: 1 of 2 job(s) of the sweep did not complete (failed 1)" in proc.stderr
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/record.json"))
    assert statuses == ["completed", "failed"]


@pytest.mark.slow
def test_slurm_launcher_off_a_cluster_is_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = Path(sys.executable).parent
    # A PATH with every system tool except SLURM's: the test holds on a login node or a machine whose
    # CI installed slurm-wlm (sbatch in /usr/bin), not only on one without SLURM.
    no_slurm = tmp_path / "bin-without-slurm"
    no_slurm.mkdir()
    for system_dir in (Path("/usr/bin"), Path("/bin")):
        for tool in system_dir.iterdir() if system_dir.is_dir() else ():
            link = no_slurm / tool.name
            if tool.name not in ("sbatch", "srun") and not link.exists():
                link.symlink_to(tool)
    proc = run_cli("mmsafety-eval", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "task.limit=2",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env={"PATH": f"{bin_dir}:{no_slurm}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm needs SLURM, but sbatch and srun are not on PATH here; run the sweep from a "
        "SLURM login node, or drop hydra/launcher=slurm to run its jobs on this machine"]
    assert not (tmp_path / "sweep").exists()


def _interrupt_when(cmd: list[str], ready, err_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Start `cmd`, send SIGINT (Ctrl-C) once `ready()`, and return its exit status and output."""
    with open(err_path, "w") as err:
        # Ctrl-C's default action even when pytest runs in the background (a shell starts background
        # jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt).
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended before Ctrl-C: {err_path.read_text()[-2000:]}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err_path.read_text())


@pytest.mark.slow
def test_ctrl_c_during_an_attack_is_one_line_and_the_rerun_says_where_it_resumes(tmp_path):
    out = tmp_path / "attack"
    cmd = [*ATTACK, "attack.steps=20", "attack.checkpoint_every=5", "images=1", "heldout_prompts=2",
           "attack.eps=32/255", f"hydra.run.dir={out}"]
    stopped = _interrupt_when(cmd, lambda: any(out.glob("attack_state_images*.pt")), tmp_path / "err1")
    assert stopped.returncode == 130
    assert stopped.stderr.rstrip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in stopped.stderr
    assert json.loads((out / "record.json").read_text())["status"] == "partial"
    assert INTERRUPTED in (out / "attack.log").read_text()

    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming: 0 of 1 images already attacked and judged; images0-0 from step " in done.stderr
    # The result: a table with the clean baseline and utility rates beside the success rates, then the record.
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["success", "attacked", "clean"]
    assert any(line.startswith("syntax ") for line in lines) and any(line.startswith("first_line_kept") for line in lines)
    assert any(line.startswith("stealth: SSIM") for line in lines)
    assert lines[-1] == f"record: {out / 'record.json'}"
    assert "{" not in done.stdout  # no raw JSON dump
    assert json.loads((out / "record.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_ctrl_c_during_an_eval_is_one_line_and_resumes(tmp_path):
    out = tmp_path / "eval"
    cmd = [*EVAL, "task=goat_sarcasm", "task.limit=100", "batch_size=1", f"hydra.run.dir={out}"]
    stopped = _interrupt_when(cmd, lambda: len(read_samples(out / "samples.jsonl")) >= 3, tmp_path / "err")
    assert stopped.returncode == 130
    assert stopped.stderr.rstrip().splitlines()[-1] == INTERRUPTED and "Traceback" not in stopped.stderr
    done = len(read_samples(out / "samples.jsonl"))
    assert json.loads((out / "record.json").read_text())["status"] == "partial" and 3 <= done < 100
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"{done} already done" in again.stderr
