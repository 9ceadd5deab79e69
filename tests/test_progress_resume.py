"""A resumed run's progress counter goes on from what it had done (issue 25): the eval counts the memes
already answered, the attack the steps of its saved attack state; the rate is this invocation's."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from mmsafety.progress import LoggedProgress
from tests.helpers import run_cli
from visual_attacks.craft import saved_step
from visual_attacks.pgd import Checkpoint


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def job_lines():
    handler, logger = Collect(), logging.getLogger("mmsafety.job")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_resumed_counter_starts_from_what_was_done_and_its_rate_counts_only_this_run(job_lines, monkeypatch):
    clock = iter([100.0, 110.0, 110.0])  # start; the closing line 10 s later
    # this module's clock only: patching time.monotonic would also feed any logging handler that reads it
    monkeypatch.setattr("mmsafety.progress.monotonic", lambda: next(clock))
    bar = LoggedProgress(total=300, desc="attack", unit="step", every_s=3600, initial=250)
    bar.update(50)
    bar.close()
    assert job_lines == ["attack: 300/300 steps done in 10.0s, 5.00 steps/s"]  # 50 steps in 10 s, not 300


def test_the_attack_counter_starts_at_the_step_of_the_state_this_config_saved(tmp_path):
    path = tmp_path / "attack_state_images0-0.pt"
    mine = Checkpoint(path, every=100, config_sha256="a" * 64)
    assert saved_step(None) == 0 and saved_step(mine) == 0  # no checkpointing; nothing saved yet
    mine.save({"x": torch.zeros(1), "step": 37})
    assert saved_step(mine) == 37
    assert saved_step(Checkpoint(path, every=100, config_sha256="b" * 64)) == 0  # another config's: pgd starts at 0


@pytest.mark.slow
def test_a_resumed_eval_counts_the_memes_answered_before(tmp_path):
    run = tmp_path / "run"
    args = ["task=goat_sarcasm", "task.limit=4", f"hydra.run.dir={run}"]
    env = {"MMSAFETY_LOG_EVERY_S": "3600"}  # one progress line, at the end
    first = run_cli("mmsafety-eval", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"logprob: 4/4 memes done in ", first.stderr), first.stderr[-2000:]
    samples = (run / "samples.jsonl").read_text().splitlines(keepends=True)
    (run / "samples.jsonl").write_text("".join(samples[:1]))  # as if killed after its first meme
    again = run_cli("mmsafety-eval", *args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 already done" in again.stderr
    assert re.search(r"logprob: 4/4 memes done in [\d.]+s, [\d.]+ memes/s", again.stderr), again.stderr[-2000:]
