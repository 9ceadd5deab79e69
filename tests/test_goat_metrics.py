"""Metrics equal a hand-written reference on random predictions; Overall reproduces the paper."""

from __future__ import annotations

import random

import pytest

from goat_bench.metrics import overall, task_metrics
from goat_bench.tasks import PAPER_COUNTS, PAPER_TABLE2


def reference(labels, preds):
    """Straight from the definitions; invalid (None) is scored as the wrong class."""
    scored = [1 - y if p is None else p for y, p in zip(labels, preds)]
    acc = 100 * sum(y == p for y, p in zip(labels, scored)) / len(labels)
    f1s = []
    for c in (0, 1):
        tp = sum(y == c and p == c for y, p in zip(labels, scored))
        fp = sum(y != c and p == c for y, p in zip(labels, scored))
        fn = sum(y == c and p != c for y, p in zip(labels, scored))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    cm = [[sum(y == a and p == b for y, p in zip(labels, scored)) for b in (0, 1)] for a in (0, 1)]
    return acc, 100 * sum(f1s) / 2, cm


@pytest.mark.parametrize("seed", range(8))
def test_task_metrics_equal_reference_on_random_predictions(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 300)
    labels = [rng.randint(0, 1) for _ in range(n)]
    preds = [rng.choice([0, 1, None]) if rng.random() < 0.2 else rng.randint(0, 1) for _ in range(n)]
    m = task_metrics(labels, preds, bootstrap=200, seed=seed)
    acc, f1, cm = reference(labels, preds)
    assert m["accuracy"] == pytest.approx(acc, abs=1e-4)
    assert m["macro_f1"] == pytest.approx(f1, abs=1e-4)
    assert m["confusion"] == cm
    assert m["invalid"] == sum(p is None for p in preds)
    lo, hi = m["ci95"]["accuracy"]
    assert lo <= acc <= hi and hi - lo < 100
    pos = m["per_class"]["positive"]
    assert pos["support"] == sum(labels)


def test_all_one_class_predictions():
    m = task_metrics([0, 1, 1, 0], [1, 1, 1, 1], bootstrap=0)
    assert m["accuracy"] == 50 and m["macro_f1"] == pytest.approx(100 * (0 + 2 / 3) / 2)


def test_overall_reproduces_the_papers_gpt4v_row():
    """Table 2: GPT-4V Overall 72.17 / 70.29 from its per-task numbers and the per-task counts."""
    row = PAPER_TABLE2["GPT-4V"]
    per_task = {t: {"n": PAPER_COUNTS[t], "accuracy": row[t][0], "macro_f1": row[t][1]} for t in PAPER_COUNTS}
    o = overall(per_task)
    assert o["n"] == 6626
    assert o["accuracy"] == pytest.approx(72.17, abs=0.015)  # per-task inputs are rounded to 0.01
    assert round(o["macro_f1"], 2) == 70.29


@pytest.mark.parametrize("model", sorted(PAPER_TABLE2))
def test_overall_matches_every_reported_row(model):
    row = PAPER_TABLE2[model]
    per_task = {t: {"n": PAPER_COUNTS[t], "accuracy": row[t][0], "macro_f1": row[t][1]} for t in PAPER_COUNTS}
    o = overall(per_task)
    assert o["accuracy"] == pytest.approx(row["overall"][0], abs=0.02)
    assert o["macro_f1"] == pytest.approx(row["overall"][1], abs=0.01)
