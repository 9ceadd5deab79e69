"""What a run prints: no library deprecation noise, optional things said once, progress lines that a
log file keeps readable, and the attack's result table (issue 21, items 12 and 13)."""

from __future__ import annotations

import logging

import pytest
from PIL import Image

from mmsafety.progress import LoggedProgress
from visual_attacks.report import format_attack_table


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    """Every warning transformers logs, its once-per-process memory cleared first."""
    from transformers.utils import logging as hf_logging

    logging.Logger.warning_once.cache_clear()
    handler, logger = Collect(), hf_logging.get_logger("transformers")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_choice_scoring_through_the_kv_cache_uses_the_current_cache_api(organism, transformers_warnings):
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    # Choices of several tokens score from the prompts' KV cache (mmsafety.models.sequences).
    scores = organism.choice_logprobs([image, image], ["What colour is it?", "Is this red?"], ["Yes", "No", "red square"])
    assert scores.shape == (2, 3) and bool((scores <= 0).all())
    assert not [w for w in transformers_warnings if "deprecated" in w], transformers_warnings


def test_notebook_progress_bars_can_draw_as_widgets():
    from tqdm.notebook import IProgress  # None when ipywidgets is missing: tqdm then warns "IProgress not found"

    assert IProgress is not None


def test_logged_progress_says_one_line_per_interval_and_once_at_the_end():
    handler, logger = Collect(), logging.getLogger("mmsafety.job")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        bar = LoggedProgress(total=20, desc="organism logprob", unit="meme", every_s=3600)
        for _ in range(5):
            bar.set_postfix(acc="100.0%", refresh=False)
            bar.update(4)
        bar.close()
        bar.close()
        assert len(handler.lines) == 1 and handler.lines[0].startswith("organism logprob: 20/20 memes done in ")
        assert handler.lines[0].endswith("acc=100.0%")
        stopped = LoggedProgress(total=300, desc="tool_call eps=8/255", unit="step", every_s=0)
        stopped.update(1)
        stopped.close()
        assert handler.lines[1].startswith("tool_call eps=8/255: 1/300 steps in ")
        assert handler.lines[2].startswith("tool_call eps=8/255: 1/300 steps (stopped) in ")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_attack_table_shows_rates_beside_the_clean_baseline_utility_and_stealth():
    metrics = {"images": 4, "asr": {"exact": 0.5, "syntax": 0.8125, "argument": 0.75, "leaked": 0.0},
               "clean_baseline": {"exact": 0.0, "syntax": 0.0625, "argument": 0.0, "leaked": 0.0},
               "stealth": {"linf": 32 / 255, "l2": 3.2, "psnr": 31.04, "ssim": 0.912, "unchanged_images": 0},
               "utility": {"first_line_kept": 0.9375, "benign_accuracy": 0.875, "clean_benign_accuracy": 0.9},
               "utility_counts": {"first_line_kept": 4, "benign_accuracy": 4, "clean_benign_accuracy": 4},
               "steps_run": 500.0, "attack_seconds": 101.3}
    lines = format_attack_table(metrics).splitlines()
    assert lines[0].split() == ["success", "attacked", "clean"]
    assert lines[2].split() == ["syntax", "81.2", "%", "6.2", "%"]
    assert lines[5].split() == ["utility", "rate", "images"]
    assert lines[6].split() == ["first_line_kept", "93.8", "%", "4"]
    assert lines[9] == "stealth: SSIM 0.912, PSNR 31.0 dB, L-inf 0.1255 (32.0/255), L2 3.200, LPIPS -"
    assert lines[10] == "4 image(s), 500 steps, 101.3 s of attack"
    assert format_attack_table({"images": 0}).startswith("no image was attacked")


@pytest.mark.slow
def test_a_missing_optional_component_is_said_once_per_process(tmp_path, organism, monkeypatch):
    """Two attack jobs in one process (a sweep's jobs under Hydra's basic launcher): the LPIPS line once."""
    import visual_attacks.run
    from mmsafety.app import run_workload_job

    monkeypatch.setattr(visual_attacks.run, "lpips_available", lambda: False)
    lines: list[str] = []
    for eps in ("8/255", "16/255"):
        run_workload_job("visual_attack", tmp_path / eps.replace("/", "-"), "attack.steps=2", "images=1",
                         "heldout_prompts=1", f"attack.eps={eps}", log=lines.append)
    assert sum(line.startswith("LPIPS not reported") for line in lines) == 1, lines
