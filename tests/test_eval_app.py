"""`mmsafety-eval` end to end on the organism: table, record, resume after a kill, both scoring modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mmsafety.records import read_samples
from tests.helpers import cli_command

pytestmark = pytest.mark.slow
EVAL = cli_command("mmsafety-eval")


def run_eval(out: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*EVAL, f"hydra.run.dir={out}", *overrides], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("scoring", ["logprob", "generate"])
def test_eval_writes_table_and_record(tmp_path, organism, scoring):
    proc = run_eval(tmp_path / "run", f"scoring={scoring}", "task.limit=40", "batch_size=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Acc / F1" in proc.stdout and "overall" in proc.stdout
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "completed"
    assert record["counts"] == {"ok": 200, "skipped": 0, "errors": 0}
    assert record["spec"]["prompt"]["name"] == "paper" and len(record["spec"]["prompt"]["sha256"]) == 64
    per_task = record["metrics"]["per_task"]
    for task, m in per_task.items():
        assert m["n"] == 40 and m["accuracy"] >= 80, (task, m)
    samples = read_samples(tmp_path / "run" / "samples.jsonl")
    assert len({(s["task"], s["id"]) for s in samples}) == 200
    if scoring == "generate":
        assert all("answer" in s and s["parse"] in ("yes", "no", "empty", "refusal", "ambiguous", "unrecognised") for s in samples)
    else:
        assert all(s["logprob_yes"] <= 0 and s["logprob_no"] <= 0 for s in samples)


def test_killed_eval_resumes_with_every_sample_once(tmp_path, organism):
    out = tmp_path / "run"
    overrides = [f"hydra.run.dir={out}", "task.limit=60", "batch_size=4"]
    proc = subprocess.Popen([*EVAL, *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples_file = out / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and len(read_samples(samples_file)) < 40:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_samples(samples_file)
    assert 0 < len(partial) < 300, "the kill must land mid-run"
    assert json.loads((out / "record.json").read_text())["status"] == "partial"
    done = run_eval(out, "task.limit=60", "batch_size=4")
    assert done.returncode == 0, done.stderr[-2000:]
    samples = read_samples(samples_file)
    keys = [(s["task"], s["id"]) for s in samples]
    assert len(keys) == len(set(keys)) == 300
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "completed" and record["timing"]["resumes"] == 1
    # Same predictions as an uninterrupted run.
    fresh = run_eval(tmp_path / "fresh", "task.limit=60", "batch_size=4")
    assert fresh.returncode == 0
    by_key = {(s["task"], s["id"]): s["pred"] for s in read_samples(tmp_path / "fresh" / "samples.jsonl")}
    assert {(s["task"], s["id"]): s["pred"] for s in samples} == by_key


def test_open_clip_zero_shot_baseline_runs_the_same_job(tmp_path, tiny_open_clip):
    proc = run_eval(tmp_path / "clip", "model=tiny_open_clip", "task.limit=10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "clip" / "record.json").read_text())
    assert record["status"] == "completed" and record["counts"]["ok"] == 50
    assert record["model"]["adapter"] == "open_clip"


def test_open_clip_cannot_generate_and_is_refused_before_loading(tmp_path):
    proc = run_eval(tmp_path / "clipgen", "model=tiny_open_clip", "scoring=generate", "task.limit=2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: goat_bench with scoring=generate needs a model that can generate (writes text "
                                   "answers); model=tiny_open_clip (open_clip) can only: embed, pixel_loss, score_choices")
    assert not (tmp_path / "clipgen").exists()  # refused before a record or a model


def test_images_decoded_ahead_give_the_same_samples(tmp_path, organism):
    """image_workers (on by default on a GPU): same predictions, scores and order as loading in the loop."""
    serial = run_eval(tmp_path / "serial", "task.limit=20", "image_workers=0")
    ahead = run_eval(tmp_path / "ahead", "task.limit=20", "image_workers=3")
    assert serial.returncode == 0 and ahead.returncode == 0, ahead.stderr[-2000:]

    def comparable(run):
        return [{k: v for k, v in s.items() if k != "seconds"} for s in read_samples(tmp_path / run / "samples.jsonl")]

    assert comparable("ahead") == comparable("serial") and len(comparable("serial")) == 100
