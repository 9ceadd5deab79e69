"""bench/gpu_check.sh: the one-call GPU check, run here on the CPU at --size small (slow), and its
guards, budget and version check (fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# -- fast ---------------------------------------------------------------------------------

def test_real_size_fits_its_eight_minutes_by_construction():
    caps = gpu_check.PLANS["real"].caps
    assert set(caps) == {"machine", *gpu_check.PARTS}
    assert sum(caps.values()) <= 8 * 60


def test_required_versions_are_pyprojects_ranges():
    """The text scan of pyproject.toml against a real TOML parser."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {}
    for dep in deps:
        name = dep.split(next(c for c in dep if c in "<>=!~"))[0]
        expected[name.lower()] = dep[len(name):]
    assert gpu_check.required_versions() == expected


def test_package_versions_report_found_and_fit(monkeypatch):
    import torch

    packages = gpu_check.package_versions()
    assert packages["torch"]["found"].split("+")[0] == torch.__version__.split("+")[0]
    assert packages["torch"]["required"] == gpu_check.required_versions()["torch"]
    assert packages["torch"]["ok"] is True
    monkeypatch.setattr(gpu_check, "required_versions", lambda: {"torch": "<1", "transformers": ">=5"})
    packages = gpu_check.package_versions()
    assert packages["torch"]["ok"] is False and packages["transformers"]["ok"] is True


def test_goals_met_and_missed_from_a_parts_line():
    pgd = gpu_check.goals({"part": "pgd", "worst_attack_vs_bare": 1.05, "best_share_of_matmul_rate": 0.6})
    assert pgd["attack_vs_bare"] == {"goal": 1.02, "measured": 1.05, "met": False}
    assert pgd["share_of_matmul_rate"]["met"] is True
    goat = gpu_check.goals({"part": "goat", "speedup_vs_official_loop": {
        "logprob_batch16": 12.0, "logprob_batch64": 21.0, "generate_batched_batch16": 30.0, "official_pattern": 1.0}})
    assert goat == {"logprob_vs_official_loop": {"goal": 20.0, "measured": 21.0, "met": True}}
    assert gpu_check.goals({"part": "serve", "speedup_vs_one_connection": {"1": 1.0, "16": 14.0}}) == \
        {"serve_16_vs_1_connections": {"goal": 15.0, "measured": 14.0, "met": False}}
    assert gpu_check.goals({"part": "memory", "rows": []}) == {}
    assert gpu_check.goals({"part": "pgd", "rows": []}) == {}  # measured nothing: judged on nothing


def test_a_part_over_its_cap_is_killed_and_reported():
    line = gpu_check.run_part("pgd", "small", timeout_s=1)
    assert line["part"] == "pgd" and line["ok"] is False
    assert "timed out after its cap of 1 s" in line["error"]
    assert line["seconds"] < 30


def test_a_part_that_crashes_is_reported_with_its_error():
    line = gpu_check.run_part("pgd", "no-such-size", timeout_s=120)
    assert line["ok"] is False
    assert "invalid choice" in line["error"] and "no-such-size" in line["error"]


def test_every_part_runs_when_the_machine_line_and_a_part_fail(tmp_path, monkeypatch):
    def broken(plan):
        raise RuntimeError("no matmul here")

    ran = []

    def fake_part(name, size, timeout_s, machine=None):
        ran.append(name)
        if name == "goat":
            raise OSError("cannot start a process")
        return {"part": name, "ok": True}

    monkeypatch.setattr(gpu_check, "machine_info", broken)
    monkeypatch.setattr(gpu_check, "run_part", fake_part)
    assert gpu_check.main(["--size", "small", "--out", str(tmp_path)]) == 0
    lines = [json.loads(l) for l in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert [l["part"] for l in lines] == ["machine", *gpu_check.PARTS] and ran == list(gpu_check.PARTS)
    assert lines[0]["ok"] is False and "no matmul here" in lines[0]["error"]
    assert lines[2]["ok"] is False and "cannot start a process" in lines[2]["error"]


def test_the_real_config_is_llava_1_5_7b():
    """Skips unless $MMSAFETY_REFERENCE_CHECKPOINTS names the folder of real checkpoint metadata."""
    from tests.skeletons import reference_root

    root = reference_root()
    if root is None:
        pytest.skip("set MMSAFETY_REFERENCE_CHECKPOINTS to the reference checkpoints folder to compare configs")
    import torch

    from bench.gpu_real_size import random_llava

    from transformers import LlavaConfig

    # The reference as transformers reads it (the file leaves Llama-2-7B's widths to LlamaConfig's defaults).
    real = LlavaConfig.from_dict(json.loads((root / "llava-hf__llava-1.5-7b-hf" / "config.json").read_text()))
    ours = random_llava("llava-1.5-7b", "meta", torch.bfloat16)[0].config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "projection_dim"):
        assert getattr(ours.vision_config, key) == getattr(real.vision_config, key), key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size", "max_position_embeddings", "rms_norm_eps"):
        assert getattr(ours.text_config, key) == getattr(real.text_config, key), key
    for key in ("vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_act"):
        assert getattr(ours, key) == getattr(real, key), key


# -- slow: the whole check on the CPU -----------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable}
    budget = sum(gpu_check.PLANS["small"].caps.values()) + 120
    done = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--size", "small", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=budget)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(l) for l in (out / "gpu_check.jsonl").read_text().splitlines()]
    return {line["part"]: line for line in lines}, [line["part"] for line in lines]


@pytest.mark.slow
def test_small_run_writes_the_machine_line_first_then_one_line_per_part(small_run):
    import torch
    import transformers

    lines, order = small_run
    assert order == ["machine", *gpu_check.PARTS]
    failed = {name: line.get("error") for name, line in lines.items() if not line["ok"]}
    assert not failed, failed
    machine = lines["machine"]
    assert machine["torch"] == torch.__version__ and machine["transformers"] == transformers.__version__
    assert machine["matmul"]["dtype"] == "float32" and positive(machine["matmul"]["tflops"])
    assert machine["packages"]["transformers"]["found"] == transformers.__version__


@pytest.mark.slow
def test_small_run_pgd_rows(small_run):
    pgd = small_run[0]["pgd"]
    plan = gpu_check.PLANS["small"]
    rows = {(r["mode"], r["prompts"]): r for r in pgd["rows"]}
    assert set(rows) == {(m, b) for m in plan.modes for b in plan.prompts}
    for row in rows.values():
        for key in ("ms_per_step", "bare_ms_per_step", "attack_vs_bare", "flops_per_step", "tflops",
                    "share_of_matmul_rate", "tokens_per_prompt"):
            assert positive(row[key]), (key, row)
    for b in plan.prompts:
        # Checkpointing re-runs each layer's forward in the backward: more FLOPs, less than double.
        assert 1.0 < rows["checkpointing", b]["flops_per_step"] / rows["eager", b]["flops_per_step"] < 2.0
    # The FLOP count grows with the batch, about in proportion (same-length prompts).
    one, most = rows["eager", plan.prompts[0]], rows["eager", plan.prompts[-1]]
    per_prompt = [r["flops_per_step"] / r["prompts"] for r in (one, most)]
    assert 0.8 < per_prompt[1] / per_prompt[0] < 1.25


@pytest.mark.slow
def test_small_run_goat_batched_and_loop_agree(small_run):
    goat = small_run[0]["goat"]
    plan = gpu_check.PLANS["small"]
    assert goat["answers_equal_batched_vs_loop"] == 1.0 and goat["labels_equal_batched_vs_loop"] == 1.0
    assert goat["labels"]["generate_batched"] == goat["labels"]["official_pattern"]
    assert goat["memes"] == plan.goat_memes
    assert len(goat["labels"]["official_pattern"]) == goat["compared_memes"] == plan.goat_loop_memes
    assert goat["logprob_labels_equal_across_batches"] == 1.0
    expected = {f"logprob_batch{b}" for b in plan.goat_batches} | {f"generate_batched_batch{plan.goat_batches[0]}",
                                                                   "official_pattern"}
    assert set(goat["memes_per_s"]) == expected
    assert all(positive(v) for v in goat["memes_per_s"].values())
    assert all(positive(v) for v in goat["speedup_vs_official_loop"].values())


@pytest.mark.slow
def test_small_run_memory_matches_its_estimate(small_run):
    memory = small_run[0]["memory"]
    plan = gpu_check.PLANS["small"]
    assert {(r["checkpointing"], r["prompts"]) for r in memory["rows"]} == \
        {(c, b) for c in (False, True) for b in plan.memory_prompts}
    for row in memory["rows"]:
        # Full-depth count vs extrapolation from 1- and 2-layer models: identical layers add up,
        # and a tensor count is deterministic, so the match is tight. (Counting one layer too
        # many per tower, the estimate is off by 3 % on the eager rows: the layers are small here.)
        assert abs(row["measured_vs_estimate"] - 1) < 0.005, row
    for fit in memory["per_prompt"]:
        assert positive(fit["measured_gib"]) and abs(fit["measured_gib"] / fit["estimated_gib"] - 1) < 0.005


@pytest.mark.slow
def test_small_run_serve_batches_concurrent_requests(small_run):
    serve = small_run[0]["serve"]
    assert set(serve["memes_per_s"]) == {"1", "4", "16"}
    assert all(positive(v) for v in serve["memes_per_s"].values())
    assert all(positive(v) for v in serve["speedup_vs_one_connection"].values())
    assert serve["mean_batch_size"]["1"] == 1.0
    assert serve["mean_batch_size"]["16"] > 1.0  # the server ran concurrent requests together
