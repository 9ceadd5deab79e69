"""GOAT-Bench metrics, as the paper reports them, plus what a careful reader also wants.

Per task: accuracy and macro-F1 over both classes (in %), per-class precision and recall,
the confusion matrix, the invalid-answer rate and bootstrap 95% intervals. An invalid
answer counts as wrong: it is scored as the class opposite to the true label.
Overall (Table 2): accuracy pooled over all memes (count-weighted) and the plain mean
of the per-task macro-F1 values.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torchmetrics.functional.classification import binary_confusion_matrix, multiclass_f1_score


def _as_scored(labels: Sequence[int], preds: Sequence[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor(list(labels), dtype=torch.long)
    p = torch.tensor([1 - t if q is None else q for t, q in zip(labels, preds)], dtype=torch.long)
    return y, p


def accuracy_f1(y: torch.Tensor, p: torch.Tensor) -> tuple[float, float]:
    acc = (y == p).float().mean().item() * 100
    f1 = multiclass_f1_score(p, y, num_classes=2, average="macro").item() * 100
    return acc, f1


def bootstrap_ci(y: torch.Tensor, p: torch.Tensor, resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95% intervals of accuracy and macro-F1 over memes resampled with replacement."""
    # Not torchmetrics' BootStrapper: it draws from torch's global RNG (no generator, so no explicit seed,
    # and other intervals' numbers would change) and runs the metric once per resample; here all
    # resamples are one seeded index tensor, and tests/test_metrics_torchmetrics.py checks that the
    # vectorised macro-F1 below equals torchmetrics' multiclass_f1_score on every resample.
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(y), (resamples, len(y)), generator=gen)
    ys, ps = y[idx], p[idx]
    accs = (ys == ps).float().mean(1) * 100
    # Macro-F1 per resample, vectorised, as the point estimate computes it (torchmetrics, like sklearn's
    # f1_score in GOAT-Bench's script): per class F1 = 2TP / (2TP + FP + FN), averaged over the classes
    # present in the resample's labels or predictions; a class absent from both does not count.
    f1_sum, present = torch.zeros(resamples), torch.zeros(resamples)
    for cls in (0, 1):
        tp = ((ps == cls) & (ys == cls)).sum(1).float()
        fp = ((ps == cls) & (ys != cls)).sum(1).float()
        fn = ((ps != cls) & (ys == cls)).sum(1).float()
        seen = (2 * tp + fp + fn) > 0
        f1_sum += torch.where(seen, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.zeros_like(tp))
        present += seen.float()
    f1 = f1_sum / present.clamp_min(1) * 100
    q = torch.tensor([0.025, 0.975])
    return {"accuracy": torch.quantile(accs, q).tolist(), "macro_f1": torch.quantile(f1, q).tolist()}


def task_metrics(labels: Sequence[int], preds: Sequence[int | None], *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of one task. `preds` holds 1, 0 or None (an invalid answer)."""
    if not labels:
        return {"n": 0}
    y, p = _as_scored(labels, preds)
    acc, f1 = accuracy_f1(y, p)
    valid = torch.tensor([q is not None for q in preds])
    cm = binary_confusion_matrix(p, y).tolist()  # [[TN, FP], [FN, TP]], invalid scored as wrong
    per_class = {}
    for cls, name in ((1, "positive"), (0, "negative")):
        tp = int(((p == cls) & (y == cls)).sum())
        predicted, actual = int((p == cls).sum()), int((y == cls).sum())
        per_class[name] = {"precision": 100 * tp / predicted if predicted else 0.0,
                           "recall": 100 * tp / actual if actual else 0.0, "support": actual}
    return {
        "n": len(labels), "accuracy": acc, "macro_f1": f1,
        "invalid_rate": 100 * (1 - valid.float().mean().item()), "invalid": int((~valid).sum()),
        "confusion": cm, "per_class": per_class,
        "ci95": bootstrap_ci(y, p, bootstrap, seed) if bootstrap else None,
    }


def overall(per_task: Mapping[str, Mapping]) -> dict:
    """Table 2's Overall: pooled (count-weighted) accuracy and the mean of per-task macro-F1."""
    scored = {t: m for t, m in per_task.items() if m.get("n")}
    if not scored:
        return {"n": 0}
    n = sum(m["n"] for m in scored.values())
    return {
        "n": n,
        "accuracy": sum(m["accuracy"] * m["n"] for m in scored.values()) / n,
        "macro_f1": sum(m["macro_f1"] for m in scored.values()) / len(scored),
        "tasks": sorted(scored),
    }
