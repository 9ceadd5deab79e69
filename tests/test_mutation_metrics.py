"""GOAT-Bench task metrics (goat_bench/metrics.py) against scikit-learn and numpy: per-class precision and
recall, the invalid rate, and the bootstrap interval recomputed resample by resample (F1 counted in numpy,
checked against `sklearn.metrics.f1_score`; percentiles by `numpy.percentile`). Written for
`make mutation` (its `metrics` group)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score

from goat_bench.metrics import bootstrap_ci, task_metrics


def _case(seed: int, n: int):
    rng = random.Random(seed)
    labels = [rng.randint(0, 1) for _ in range(n)]
    preds = [None if rng.random() < 0.15 else rng.randint(0, 1) for _ in range(n)]
    return labels, preds


@pytest.mark.parametrize("seed", range(4))
def test_per_class_precision_recall_and_invalid_rate_equal_scikit_learn(seed):
    labels, preds = _case(seed, 40 + 17 * seed)
    scored = [1 - y if p is None else p for y, p in zip(labels, preds)]
    m = task_metrics(labels, preds, bootstrap=0)
    for cls, name in ((1, "positive"), (0, "negative")):
        got = m["per_class"][name]
        assert got["precision"] == pytest.approx(100 * precision_score(labels, scored, pos_label=cls, zero_division=0))
        assert got["recall"] == pytest.approx(100 * recall_score(labels, scored, pos_label=cls, zero_division=0))
        assert got["support"] == labels.count(cls)
    invalid = sum(p is None for p in preds)
    assert m["invalid"] == invalid and m["invalid_rate"] == pytest.approx(100 * invalid / len(labels))
    assert m["n"] == len(labels) and m["ci95"] is None


def test_a_class_never_predicted_or_never_present_has_zero_precision_or_recall():
    m = task_metrics([1, 1, 1], [1, 1, None], bootstrap=0)  # the invalid answer counts as a 0
    assert m["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "support": 0}
    assert m["per_class"]["positive"] == {"precision": 100.0, "recall": pytest.approx(200 / 3), "support": 3}
    m = task_metrics([0, 0], [0, 0], bootstrap=0)
    assert m["per_class"]["positive"] == {"precision": 0.0, "recall": 0.0, "support": 0}
    assert m["invalid_rate"] == 0.0 and m["invalid"] == 0
    assert task_metrics([], [], bootstrap=10) == {"n": 0}


def _macro_f1(ys: np.ndarray, ps: np.ndarray) -> float:
    """Macro-F1 over the classes that occur in labels or predictions (scikit-learn's with those labels)."""
    f1s = []
    for c in sorted(set(ys.tolist()) | set(ps.tolist())):
        tp, fp, fn = np.sum((ps == c) & (ys == c)), np.sum((ps == c) & (ys != c)), np.sum((ps != c) & (ys == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def test_the_reference_macro_f1_is_scikit_learns():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 12))
        ys, ps = rng.integers(0, 2, n), rng.integers(0, 2, n)
        present = sorted(set(ys.tolist()) | set(ps.tolist()))
        assert _macro_f1(ys, ps) == pytest.approx(f1_score(ys, ps, labels=present, average="macro", zero_division=0))


def _reference_interval(labels, scored, resamples, seed):
    """The percentile bootstrap, one resample at a time: the same resampled positions (torch's generator
    with the seed, as documented), each scored by counting, the 2.5th and 97.5th percentiles by numpy."""
    idx = torch.randint(len(labels), (resamples, len(labels)), generator=torch.Generator().manual_seed(seed)).numpy()
    y, p = np.array(labels), np.array(scored)
    accs, f1s = [], []
    for row in idx:
        ys, ps = y[row], p[row]
        accs.append(100 * float((ys == ps).mean()))
        f1s.append(100 * _macro_f1(ys, ps))
    return {"accuracy": np.percentile(accs, [2.5, 97.5]).tolist(), "macro_f1": np.percentile(f1s, [2.5, 97.5]).tolist()}


@pytest.mark.parametrize("seed,n", [(0, 25), (1, 60), (2, 7)])
def test_the_bootstrap_interval_equals_a_resample_by_resample_count(seed, n):
    labels, preds = _case(100 + seed, n)
    scored = [1 - y if q is None else q for y, q in zip(labels, preds)]
    m = task_metrics(labels, preds, bootstrap=300, seed=seed)
    ref = _reference_interval(labels, scored, 300, seed)
    for key in ("accuracy", "macro_f1"):
        assert m["ci95"][key] == pytest.approx(ref[key], abs=1e-3), key
    # The default is 1000 resamples with seed 0.
    default = bootstrap_ci(torch.tensor(labels), torch.tensor(scored))
    assert default["macro_f1"] == pytest.approx(_reference_interval(labels, scored, 1000, 0)["macro_f1"], abs=1e-3)


def test_a_one_class_resample_scores_only_the_class_it_has():
    """All positives, half predicted right: every resample holds one or both classes among its predictions."""
    labels, scored = [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]
    got = bootstrap_ci(torch.tensor(labels), torch.tensor(scored), resamples=400, seed=3)
    ref = _reference_interval(labels, scored, 400, 3)
    assert got["macro_f1"] == pytest.approx(ref["macro_f1"], abs=1e-3)
    assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-3)


def test_a_task_s_interval_defaults_to_1000_resamples_with_seed_0():
    """What a GOAT run reports (`score_samples` passes only the seed): the resample-by-resample reference
    with bootstrap_ci's own defaults, so a record's interval is reproducible from its samples alone."""
    labels, preds = _case(0, 30)
    scored = [1 - y if q is None else q for y, q in zip(labels, preds)]
    got = task_metrics(labels, preds)["ci95"]
    ref = _reference_interval(labels, scored, 1000, 0)
    for key in ("accuracy", "macro_f1"):
        assert got[key] == pytest.approx(ref[key], abs=1e-3), key
    # Another seed or count moves the interval here (by 0.006 points for 1001 resamples: the tolerance above
    # is finer), so the comparison above tells them apart.
    for other in (_reference_interval(labels, scored, 1000, 1), _reference_interval(labels, scored, 1001, 0)):
        assert any(abs(a - b) > 2e-3 for key in ref for a, b in zip(other[key], ref[key]))
