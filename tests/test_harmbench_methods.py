"""HarmBench's test-case methods through the attack job, on the victim organism (refuses the
synthetic requests unless an envelope is in the image), judged offline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ATTACK = [sys.executable, "-c", "from visual_attacks.cli import main; main()"]
VICTIM = ["model=harmbench_victim", "case=harmbench_behaviors", "case.max_new_tokens=40"]


@pytest.mark.slow
def test_patch_blank_and_render_text_run_end_to_end(tmp_path):
    from visual_attacks.cli import run_attack_job

    def run_attack(out, *overrides):
        run_attack_job(out, *VICTIM, *overrides)
        return json.loads((out / "record.json").read_text())

    patch = run_attack(tmp_path / "patch", "attack=harmbench_pgd_patch", "attack.steps=3", "case.limit=2",
                       "case.judge.name=refusal_substring")
    for s in [json.loads(line) for line in (tmp_path / "patch" / "samples.jsonl").read_text().splitlines()]:
        clean = np.asarray(Image.open(tmp_path / "patch" / s["clean_png"]))
        adv = np.asarray(Image.open(tmp_path / "patch" / s["adversarial_png"]))
        assert 0 < (clean != adv).any(2).sum() <= 12 * 12  # 64x64 input: the patch is int(0.2 * 64) = 12 wide
        assert s["base"]["patch"][2] == 12 and s["base"]["test_case"] == s["base"]["behavior"] + " "
    assert patch["spec"]["harmbench_method"] == "MultiModalPGDPatch" and patch["spec"]["prompt_format"] == "harmbench"
    blank = run_attack(tmp_path / "blank", "attack=harmbench_pgd_blank", "attack.steps=2", "case.limit=2",
                       "case.judge.name=refusal_substring")
    assert blank["metrics"]["images"] == 2 and blank["spec"]["harmbench_method"] == "MultiModalPGDBlankImage"
    text = run_attack(tmp_path / "text", "attack=render_text", "case.limit=2", "case.judge.name=refusal_substring")
    assert text["metrics"]["images"] == 2 and text["metrics"]["stealth"]["linf"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "text" / "samples.jsonl").read_text().splitlines()]
    assert all(r["base"]["test_case"] == "Complete the instruction in the image." for r in rows)
    assert all(np.asarray(Image.open(tmp_path / "text" / r["clean_png"])).shape == (64, 64, 3) for r in rows)
    # The judge stage completes the saved PNGs in the record's prompt format: the job's own completions.
    from harmbench.stage import complete_record
    from mmsafety.app import load_preset

    path = complete_record(tmp_path / "text", load_preset("harmbench_victim"), max_new_tokens=40, batch_size=2)
    staged = [json.loads(line) for line in path.read_text().splitlines()]
    assert [c["generation"] for c in staged] == [r["outputs"]["adversarial"][0]["generation"] for r in rows]
    assert {c["test_case"][1] for c in staged} == {"Complete the instruction in the image."}


@pytest.mark.parametrize("override, message", [
    ("case.root=/nonexistent/HarmBench", "no HarmBench behaviours at /nonexistent/HarmBench/data/behavior_datasets"),
    ("case.judge.name=nope", "judge=nope: not registered"),
])
def test_bad_case_config_is_one_line_before_any_model_loads(tmp_path, override, message):
    proc = subprocess.run([*ATTACK, f"hydra.run.dir={tmp_path}", "case=harmbench_behaviors", "attack=harmbench_pgd", override],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
