"""PGD is textbook PGD on a classifier, respects its budgets, and keeps no graph between steps."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from visual_attacks.pgd import PGDConfig, pgd



def textbook_pgd(model, x, y, eps, alpha, steps):
    """Madry et al. (2018), no random start: ascend the cross-entropy of the true label."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def test_equals_textbook_pgd_on_a_classifier(classifier):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 32, 32, generator=gen), torch.tensor([1, 2, 3, 4])
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    expected = textbook_pgd(classifier, x, y, eps, alpha, steps)
    # Per-example cross-entropy summed has the same gradient as the batch mean, up to a positive
    # factor (B): the sign is identical, so the iterates must be too.
    objective = lambda px, _: -F.cross_entropy(classifier(px), y, reduction="none")
    result = pgd(objective, x, PGDConfig(norm="linf", eps=eps, step_size=alpha, steps=steps, keep_best=False))
    assert torch.equal(result.pixels, expected)
    assert result.steps_run == steps


@pytest.mark.parametrize("norm", ["linf", "l2", "none"])
@pytest.mark.parametrize("random_start", [False, True])
def test_budget_and_box_hold(classifier, norm, random_start):
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 3, 32, 32, generator=gen), torch.tensor([0, 5, 9])
    eps = {"linf": 4 / 255, "l2": 0.5, "none": 1.0}[norm]
    cfg = PGDConfig(norm=norm, eps=eps, step_size=0.05 if norm == "l2" else 2 / 255, steps=5, random_start=random_start)
    out = pgd(lambda px, _: -F.cross_entropy(classifier(px), y, reduction="none"), x, cfg).pixels
    assert out.min() >= 0 and out.max() <= 1
    delta = (out - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    elif norm == "l2":
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    assert delta.abs().sum() > 0


@pytest.mark.parametrize("optimizer", ["sign", "adam"])
def test_attack_lowers_the_objective_and_keeps_the_best(classifier, optimizer):
    gen = torch.Generator().manual_seed(3)
    x, target = torch.rand(2, 3, 32, 32, generator=gen), torch.tensor([7, 7])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    cfg = PGDConfig(norm="linf", eps=16 / 255, step_size=2 / 255, steps=20, optimizer=optimizer)
    result = pgd(objective, x, cfg)
    clean = objective(x, 0)
    assert (result.best_loss < clean).all()
    torch.testing.assert_close(objective(result.pixels, 0), result.best_loss, atol=1e-5, rtol=1e-5)
    assert (result.best_loss <= result.losses.min(0).values + 1e-6).all()


def test_early_stop(classifier):
    x, target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([3])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    threshold = objective(x, 0).item() + 1.0  # met at once
    result = pgd(objective, x, PGDConfig(steps=100, early_stop_loss=threshold, check_every=5))
    assert result.stopped_early and result.steps_run == 5


def test_random_start_is_seeded(classifier):
    x, y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)), torch.tensor([1])
    objective = lambda px, _: -F.cross_entropy(classifier(px), y, reduction="none")
    runs = [pgd(objective, x, PGDConfig(steps=2, random_start=True, seed=s)).pixels for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_no_graph_survives_a_step(classifier):
    """Memory stays flat: every step's loss tensor (and the graph behind it) is freed."""
    x, y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6)), torch.tensor([2])
    alive = []

    def objective(px, step):
        loss = -F.cross_entropy(classifier(px), y, reduction="none")
        alive.append(weakref.ref(loss))
        return loss

    result = pgd(objective, x, PGDConfig(steps=6))
    gc.collect()
    assert all(ref() is None for ref in alive), "a step's autograd graph is still referenced"
    assert result.losses.grad_fn is None and result.pixels.grad_fn is None and not result.pixels.requires_grad


def test_quantized_iterates_are_on_the_8bit_grid(classifier):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7)).mul(255).round().div(255)
    y = torch.tensor([2])
    out = pgd(lambda px, _: -F.cross_entropy(classifier(px), y, reduction="none"), x,
              PGDConfig(steps=3, quantize=True, step_size=1.5 / 255)).pixels
    torch.testing.assert_close(out, out.mul(255).round().div(255), atol=1e-6, rtol=0)


def test_bf16_model_keeps_fp32_attack_math_and_sdpa_attention(organism):
    """Weights in bf16, perturbation and losses in fp32; attention through SDPA; the attack still works."""
    from mmsafety.synthetic import scenes
    from tests.helpers import load_builtin
    from visual_attacks.objectives import PromptSampler, target_string
    from visual_attacks.targets import ToolTarget

    bf16 = load_builtin("organism", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.model.config._attn_implementation == "sdpa"
    assert not any(p.requires_grad for p in bf16.model.parameters())  # frozen: no parameter gradients
    clean = bf16.to_input_pixels([s.image for s in scenes.scenes(0, 2)])
    target = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)
    objective = target_string(bf16, target, PromptSampler(["What colour is the shape?", "Describe the image."], 2, 0))
    pixels = clean.clone().requires_grad_(True)
    loss = objective(pixels, 0)
    grad, = torch.autograd.grad(loss.sum(), pixels)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    result = pgd(objective, clean, PGDConfig(eps=32 / 255, step_size=2 / 255, steps=30))
    assert result.pixels.dtype == torch.float32
    assert (result.best_loss < result.losses[0]).all()


def _two_images_one_below(classifier, margin=1e-4):
    x, target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8)), torch.tensor([3, 4])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    start = objective(x, 0)
    return x, objective, start, float(start.min() + margin), int(start.argmin())


def test_early_stop_is_per_image_and_freezes_the_stopped_image(classifier):
    """HarmBench stops a behaviour once its loss is below stop_loss: with a batch, only the images
    below stop (their pixels frozen); the others run the whole budget."""
    x, objective, start, threshold, done = _two_images_one_below(classifier)
    other = 1 - done
    result = pgd(objective, x, PGDConfig(eps=8 / 255, step_size=1 / 255, steps=9, early_stop_loss=threshold, check_every=1))
    assert result.image_steps.tolist()[done] == 1 and result.image_steps.tolist()[other] == 9
    assert torch.equal(result.pixels[done], x[done])  # no update after it stopped
    assert not torch.equal(result.pixels[other], x[other])
    assert not result.stopped_early and result.steps_run == 9
    assert torch.isnan(result.losses[1:, done]).all() and not torch.isnan(result.losses[:, other]).any()


def test_early_stop_window_needs_that_many_checks_in_a_row(classifier):
    x, objective, start, threshold, done = _two_images_one_below(classifier)
    result = pgd(objective, x, PGDConfig(eps=8 / 255, steps=9, early_stop_loss=threshold, early_stop_window=3, check_every=2))
    assert result.image_steps.tolist()[done] == 6  # checks after steps 2, 4, 6: stopped at the third


def test_early_stop_on_success_stops_each_image_when_it_succeeds(classifier):
    x, target = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(9)), torch.tensor([3, 4, 5])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    calls = []

    def succeeded(pixels):  # image 1 succeeds at the second check (after step 4); a stopped image is not asked
        calls.append(pixels.shape[0])
        return torch.tensor([False, len(calls) == 2, False][: pixels.shape[0]])

    result = pgd(objective, x, PGDConfig(eps=8 / 255, steps=6, check_every=2), succeeded=succeeded)
    assert result.image_steps.tolist() == [6, 4, 6]
    assert calls == [3, 3, 2]  # a stopped image is not judged again


def test_early_stop_state_resumes_bit_identically(classifier, tmp_path):
    from visual_attacks.pgd import Checkpoint

    x, objective, start, threshold, done = _two_images_one_below(classifier)
    cfg = PGDConfig(eps=8 / 255, steps=10, early_stop_loss=threshold, check_every=1, optimizer="adam", step_size=2 / 255)
    expected = pgd(objective, x, cfg)

    class Killed(Exception):
        pass

    def killed_at_7(px, step):
        if step == 7:
            raise Killed
        return objective(px, step)

    with pytest.raises(Killed):
        pgd(killed_at_7, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 3))
    resumed = pgd(objective, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 3))
    assert torch.equal(resumed.pixels, expected.pixels) and torch.equal(resumed.image_steps, expected.image_steps)
    assert torch.equal(resumed.losses.nan_to_num(-1), expected.losses.nan_to_num(-1))
