"""Synthetic data: deterministic, balanced, disjoint splits, GOAT-Bench layout, prompts agree."""

from __future__ import annotations

import json

from goat_bench.data import load_task
from goat_bench.prompts import PAPER
from mmsafety.synthetic import memes, prompts


def test_memes_are_deterministic_and_balanced():
    a, b = memes.memes("sarcasm", "train", 300, seed=4), memes.memes("sarcasm", "train", 300, seed=4)
    assert [m.text for m in a] == [m.text for m in b]
    assert [m.image.tobytes() for m in a[:20]] == [m.image.tobytes() for m in b[:20]]
    share = sum(m.labels["sarcasm"] for m in a) / len(a)
    assert 0.4 < share < 0.65


def test_labels_follow_the_documented_rule():
    for m in memes.memes("harmfulness", "heldout", 200):
        for t in memes.TASKS:
            has_keyword = any(k in m.text.split() for k in memes.KEYWORDS[t])
            assert m.labels[t] == int(has_keyword or m.image_cues[t])


def test_train_and_heldout_captions_are_disjoint():
    train = {m.text for t in memes.TASKS for m in memes.memes(t, "train", 200)}
    held = {m.text for t in memes.TASKS for m in memes.memes(t, "heldout", 200)}
    assert not train & held


def test_benign_prompt_splits_are_disjoint_and_sized():
    train, held = prompts.benign_prompts("train"), prompts.benign_prompts("heldout")
    assert not set(train) & set(held)
    assert len(train) + len(held) >= 300
    assert not set(prompts.tool_request_prompts("train")) & set(prompts.tool_request_prompts("heldout"))


def test_goat_layout_roundtrip(tmp_path):
    root = memes.write_goat_layout(tmp_path / "goat", n_per_task=6)
    for task in memes.TASKS:
        lines = (root / task / "test.jsonl").read_text().splitlines()
        assert len(lines) == 6 and {"id", "img", "text", "label"} <= set(json.loads(lines[0]))
        samples = load_task(root, task)
        assert len(samples) == 6 and all(s.skip_reason is None for s in samples)
        assert all(s.image_path.is_file() for s in samples)


def test_organism_training_prompt_is_the_paper_template():
    for task in memes.TASKS:
        assert memes.goat_question(task, "when my boss sees the coffee") == PAPER.render(task, "when my boss sees the coffee")
