"""Known values that a plausible wrong implementation would miss: stealth metrics on a hand-computed
change, and PGD's best iterate when the last iterate is worse than an earlier one."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from visual_attacks.pgd import PGDConfig, pgd
from visual_attacks.stealth import stealth_metrics


def test_a_uniform_one_level_change_has_the_textbook_psnr_l2_and_linf():
    clean = torch.full((1, 3, 8, 8), 100 / 255)
    adversarial = clean + 1 / 255
    row, = stealth_metrics(clean, adversarial)
    # PSNR = 10 log10(1 / MSE) with data range 1 and MSE = (1/255)^2: 20 log10(255) = 48.1308 dB.
    assert math.isclose(row["psnr"], 20 * math.log10(255), abs_tol=1e-3)
    assert math.isclose(row["psnr"], 48.13, abs_tol=0.005)
    assert math.isclose(row["linf"], 1 / 255, rel_tol=1e-5)
    assert math.isclose(row["l2"], math.sqrt(3 * 8 * 8) / 255, rel_tol=1e-5)  # 192 pixels of 1/255
    assert math.isclose(row["ssim"], 1.0, abs_tol=1e-3)  # a constant shift of a flat image keeps its structure


def test_an_unchanged_image_has_infinite_psnr_and_zero_distance():
    clean = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    row, = stealth_metrics(clean, clean.clone())
    assert row["psnr"] == float("inf") and row["linf"] == 0 and row["l2"] == 0
    assert math.isclose(row["ssim"], 1.0, abs_tol=1e-6)


def test_keep_best_returns_an_earlier_iterate_when_the_last_one_overshoots():
    # Loss |x - 0.5| from x0 = 0.4 with sign steps of 0.07: iterates 0.40, 0.47, then 0.54 (loss 0.04),
    # worse than 0.47 (loss 0.03). keep_best must return 0.47; the last iterate is 0.54.
    clean = torch.full((1, 1, 1, 1), 0.4)

    def objective(x, step):
        return (x - 0.5).abs().flatten(1).mean(1)

    cfg = PGDConfig(norm="linf", eps=0.2, step_size=0.07, steps=2, keep_best=True)
    best = pgd(objective, clean, cfg)
    last = pgd(objective, clean, replace(cfg, keep_best=False))
    assert torch.allclose(best.pixels, torch.full_like(clean, 0.47), atol=1e-6)
    assert torch.allclose(best.best_loss, torch.tensor([0.03]), atol=1e-6)
    assert torch.allclose(last.pixels, torch.full_like(clean, 0.54), atol=1e-6)


def test_ssim_equals_scikit_image_on_fixed_images_with_the_same_border_handling():
    """SSIM against scikit-image's `structural_similarity` (an independent implementation) on a fixed
    non-identical pair. Same setting: Gaussian window sigma 1.5 (11 taps), population covariance,
    K1 0.01, K2 0.03, data range 1, mean over channels. By design the two differ only at the border:
    torchmetrics pads each image by 5 pixels with whole-sample reflection and averages the map over
    every pixel, while scikit-image averages only the pixels whose window fits inside the image. The
    reference therefore pads the same way (numpy's "reflect" is torch's) and averages scikit-image's
    map over the original pixels; it then agrees to float32 rounding (measured 2e-8). scikit-image's own
    border rule on this 32x32 pair gives 0.737 against 0.729: a tolerance would have to be loose enough
    to pass a wrong data range's small shifts, hence the matched borders."""
    import numpy as np
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 32)
    clean = (0.5 * ramp[None, :] + 0.3 * ramp[:, None] + 0.2 * torch.rand(1, 3, 32, 32, generator=gen)).clamp(0, 1)
    adversarial = (clean + 0.2 * (torch.rand(clean.shape, generator=gen) - 0.5)).clamp(0, 1)
    row, = stealth_metrics(clean, adversarial)

    pad = 5  # (11 - 1) // 2: the window's half width
    padded = [np.pad(x[0].double().numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
              for x in (adversarial, clean)]
    _, ssim_map = structural_similarity(*padded, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
    reference = ssim_map[:, pad:-pad, pad:-pad].mean()
    assert 0.5 < reference < 0.99  # a real change, far from both ends of the scale
    assert math.isclose(row["ssim"], reference, abs_tol=1e-6)


def test_the_bootstrap_interval_of_a_one_class_task_answered_all_right_is_its_point_estimate():
    from goat_bench.metrics import task_metrics

    metrics = task_metrics([0] * 6, [0] * 6)
    assert metrics["macro_f1"] == 100.0
    assert metrics["ci95"]["macro_f1"] == [100.0, 100.0]


def test_a_run_with_no_scored_meme_has_an_overall_count_of_zero():
    """Every meme skipped (unreadable images): no accuracy to report, and the count says so, as the
    table and the leaderboard read it (metrics["overall"]["n"])."""
    from goat_bench.evaluate import score_samples

    samples = [{"task": "sarcasm", "id": str(k), "status": "skipped", "reason": "unreadable image", "label": 1}
               for k in range(3)]
    metrics = score_samples(samples, ["sarcasm"])
    assert metrics["per_task"]["sarcasm"] == {"n": 0, "skipped": 3, "errors": 0}
    # no scored meme, none errored, and all of the paper's five tasks named as missing from Overall
    assert metrics["overall"] == {"n": 0, "errors": 0, "missing_tasks": metrics["overall"]["missing_tasks"]}
    assert sorted(metrics["overall"]["missing_tasks"]) == sorted(
        ["hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"])


def test_overall_pools_accuracy_by_count_and_names_the_tasks_it_pooled():
    """Table 2's Overall: accuracy weighted by each task's meme count, macro-F1 the plain mean, and the
    record names which tasks went in (a task with no scored meme is left out, not counted as 0)."""
    from goat_bench.metrics import overall

    per_task = {"sarcasm": {"n": 30, "accuracy": 90.0, "macro_f1": 80.0},
                "misogyny": {"n": 10, "accuracy": 50.0, "macro_f1": 40.0},
                "harmfulness": {"n": 0}}
    pooled = overall(per_task)
    assert pooled["n"] == 40 and pooled["tasks"] == ["misogyny", "sarcasm"]
    assert math.isclose(pooled["accuracy"], (30 * 90 + 10 * 50) / 40)
    assert math.isclose(pooled["macro_f1"], (80 + 40) / 2)
