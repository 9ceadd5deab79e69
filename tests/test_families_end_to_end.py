"""Every VLM family runs both workloads end to end through the public API, on its tiny model:
a GOAT-Bench eval in both scoring modes, and a tool-call attack whose images are judged as PNGs."""

from __future__ import annotations

import json

import pytest

from goat_bench.cli import run_eval
from mmsafety.records import read_samples
from tests.helpers import ADAPTER_OF
from visual_attacks.cli import run_attack_job

FAMILY_MODELS = sorted(name for name, adapter in ADAPTER_OF.items()
                       if name.startswith("tiny_") and adapter != "open_clip")


def test_every_language_model_family_is_here():
    from mmsafety.models.registry import adapter_names

    served = {ADAPTER_OF[name] for name in FAMILY_MODELS}
    assert served == set(adapter_names()) - {"open_clip", "openai_compatible"}  # served: tests/test_served_*.py


@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_family_runs_goat_eval_and_attack(tmp_path, model):
    for scoring in ("logprob", "generate"):
        metrics, record_path = run_eval(tmp_path / scoring, f"model={model}", f"scoring={scoring}", "task.limit=3",
                                        "batch_size=4")
        record = json.loads(open(record_path).read())
        assert record["status"] == "completed" and record["counts"]["ok"] == 15, record["counts"]
        assert len(read_samples(tmp_path / scoring / "samples.jsonl")) == 15
        assert set(metrics["per_task"]) == {"hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"}
    metrics, record_path = run_attack_job(tmp_path / "attack", f"model={model}", "attack.steps=4", "images=2",
                                          "heldout_prompts=2", "attack.prompts_per_step=2")
    record = json.loads(open(record_path).read())
    assert record["status"] == "completed" and metrics["images"] == 2
    assert metrics["stealth"]["linf"] <= 8 / 255 + 1e-6
    samples = read_samples(tmp_path / "attack" / "samples.jsonl")
    assert len(samples) == 2 and all((tmp_path / "attack" / s["adversarial_png"]).exists() for s in samples)
