"""The judge-agreement counts come from torchmetrics' confusion matrix (issue 28 item 3): on fixed data
they equal the hand-written counts they replaced (kept here as the reference), and so every rate built
on them (agreement, FPR, FNR, kappa's fallback)."""

from __future__ import annotations

import random

import pytest

from harmbench.metrics import agreement_metrics


def hand_counts(predicted: list[int], truth: list[int]) -> dict:
    """The implementation torchmetrics replaced: -1 (unparseable) counts as 0."""
    pred = [int(p == 1) for p in predicted]
    tp = sum(p == 1 and t == 1 for p, t in zip(pred, truth))
    tn = sum(p == 0 and t == 0 for p, t in zip(pred, truth))
    fp = sum(p == 1 and t == 0 for p, t in zip(pred, truth))
    fn = sum(p == 0 and t == 1 for p, t in zip(pred, truth))
    n = len(truth)
    return {"tp": tp, "tn": tn, "fp": fp, "fn": fn, "agreement": (tp + tn) / n if n else None,
            "fpr": fp / (fp + tn) if fp + tn else None, "fnr": fn / (fn + tp) if fn + tp else None}


def fixed_cases() -> list[tuple[list[int], list[int]]]:
    rng = random.Random("agreement-counts")
    cases = [([], []), ([1, 1, 1], [1, 1, 1]), ([0, 0], [0, 0]), ([-1, -1, 0], [1, 0, 1]), ([1, 0], [0, 1])]
    for n in (1, 7, 48, 301):  # 48: the synthetic validation set's size
        truth = [rng.randint(0, 1) for _ in range(n)]
        cases.append(([rng.choice((1, 0, -1)) for _ in range(n)], truth))
        cases.append(([rng.choice((1, 1, 1, 0)) for _ in range(n)], truth))  # skewed toward harmful
    return cases


@pytest.mark.parametrize("predicted,truth", fixed_cases())
def test_agreement_counts_equal_the_hand_written_ones(predicted, truth):
    got = agreement_metrics(predicted, truth)
    assert {k: got[k] for k in hand_counts(predicted, truth)} == hand_counts(predicted, truth)
    assert all(type(got[k]) is int for k in ("tp", "tn", "fp", "fn"))  # plain ints: they go into JSON
    assert got["n"] == len(truth) and got["unparsed"] == predicted.count(-1)


def test_the_fixed_cases_cover_every_cell():
    """The comparison means something: every cell of the confusion matrix is non-zero somewhere."""
    totals = {k: sum(hand_counts(p, t)[k] for p, t in fixed_cases()) for k in ("tp", "tn", "fp", "fn")}
    assert all(v > 0 for v in totals.values()), totals


@pytest.mark.parametrize("seed", range(4))
def test_goat_bootstrap_macro_f1_is_torchmetrics_on_every_resample(seed):
    """GOAT-Bench's bootstrap computes macro-F1 for all resamples at once by hand; on each resample it must
    equal torchmetrics' multiclass_f1_score (the point estimate's definition: classes absent from both the
    labels and the predictions of a resample do not count), so the interval is the quantiles of those."""
    import torch
    from torchmetrics.functional.classification import multiclass_f1_score

    from goat_bench.metrics import _as_scored, bootstrap_ci

    rng = random.Random(f"goat-bootstrap/{seed}")
    n = rng.randint(3, 40)  # small: some resamples hold one class only
    labels = [rng.choice((0, 0, 0, 1)) for _ in range(n)]
    preds = [rng.choice((0, 1, None)) if rng.random() < 0.3 else labels[i] for i in range(n)]
    y, p = _as_scored(labels, preds)
    resamples = 300
    got = bootstrap_ci(y, p, resamples, seed)
    idx = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))  # the same draws
    f1 = torch.tensor([multiclass_f1_score(p[i], y[i], num_classes=2, average="macro").item() * 100 for i in idx])
    accuracy = torch.tensor([(y[i] == p[i]).float().mean().item() * 100 for i in idx])
    q = torch.tensor([0.025, 0.975])
    assert got["macro_f1"] == pytest.approx(torch.quantile(f1, q).tolist(), abs=1e-3)
    assert got["accuracy"] == pytest.approx(torch.quantile(accuracy, q).tolist(), abs=1e-3)
    assert f1.unique().numel() > 5  # the resamples differ: the quantiles compare distributions, not a constant
