"""The judge stage on its own: another run's saved PNGs, judged again by the same model (the same
rates as the attack job's), by another model (transfer), and refused for a model that cannot judge."""

from __future__ import annotations

import json

import pytest

from mmsafety.errors import ConfigError
from mmsafety.records import RunRecord, read_samples
from visual_attacks.cli import run_attack_job
from visual_attacks.judge import judge_saved_attack

pytestmark = pytest.mark.slow  # a short attack on the organism, then three judgings (about 30 s on 2 cores)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, organism):
    out = tmp_path_factory.mktemp("craft") / "run"
    run_attack_job(out, "attack.steps=30", "attack.eps=16/255", "images=2", "heldout_prompts=4")
    return out


def test_rejudging_on_the_crafting_model_gives_the_attack_jobs_rates(crafted, organism):
    original = read_samples(crafted / "samples.jsonl")
    metrics = judge_saved_attack(crafted, organism, log=lambda line: None)
    assert metrics == json.loads((crafted / "record.json").read_text())["metrics"] | {
        "attack_seconds": metrics["attack_seconds"]}
    assert metrics["images"] == len(original) == 2


def test_judging_another_models_pngs_writes_a_judge_record(crafted, tiny_llava, tmp_path):
    record = RunRecord.open(tmp_path / "judge", "visual_attack", {"judge": "tiny_llava", "source": str(crafted)})
    metrics = judge_saved_attack(crafted, tiny_llava, record, log=lambda line: None)
    record.update(metrics=metrics)
    record.write("completed")
    record.close()
    samples = read_samples(tmp_path / "judge" / "samples.jsonl")
    source = read_samples(crafted / "samples.jsonl")
    # The judged PNGs travel with the judge's record, under their own names (a record's files stay in its folder).
    assert [s["adversarial_png"] for s in samples] == [s["adversarial_png"] for s in source]
    assert all((tmp_path / "judge" / s["adversarial_png"]).read_bytes() == (crafted / s["adversarial_png"]).read_bytes()
               for s in source)
    assert all(s["source_run"] == str(crafted.resolve()) for s in samples)
    spec = json.loads((tmp_path / "judge" / "record.json").read_text())["spec"]
    assert spec["stage"] == "judge" and spec["source_model"]["name"] == "organism"
    # The random-init model never writes the organism's tool call, attacked or not.
    assert metrics["asr"]["syntax"] == 0.0 and metrics["images"] == 2


def test_a_model_that_cannot_judge_the_case_is_refused(crafted, tiny_open_clip):
    with pytest.raises(ConfigError, match="judging case=tool_call needs a model that can generate"):
        judge_saved_attack(crafted, tiny_open_clip)
