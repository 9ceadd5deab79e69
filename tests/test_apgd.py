"""optimizer=apgd equals torchattacks' APGD (a copy of Croce & Hein's autoattack code) step for step on a
classifier, uses the fixed validation score for its step-size rule on universal attacks, and resumes
bit-identically after a kill."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visual_attacks.apgd import schedule
from visual_attacks.pgd import Checkpoint, PGDConfig, pgd

torchattacks = pytest.importorskip("torchattacks")



def reference(model, x, y, norm, eps, n_iter, seed):
    """torchattacks.APGD's single run (their random start drawn from the global RNG after manual_seed)."""
    atk = torchattacks.APGD(model, norm=norm, eps=eps, steps=n_iter, n_restarts=1, seed=seed, loss="ce", rho=0.75)
    torch.manual_seed(seed)
    x_best, _, loss_best, _ = atk.attack_single_run(x.clone(), y.clone())
    return x_best, loss_best


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_equals_torchattacks_apgd_step_for_step(classifier, norm, eps):
    gen = torch.Generator().manual_seed(11)
    x, y = torch.rand(4, 3, 32, 32, generator=gen), torch.tensor([1, 2, 3, 4])
    n_iter, seed = 24, 3
    expected_x, expected_loss = reference(classifier, x, y, {"linf": "Linf", "l2": "L2"}[norm], eps, n_iter, seed)
    objective = lambda px, _: -F.cross_entropy(classifier(px), y, reduction="none")  # minimise minus their loss
    cfg = PGDConfig(norm=norm, eps=eps, steps=n_iter + 1, optimizer="apgd", random_start=True, seed=seed)
    result = pgd(objective, x, cfg)
    # Their first oscillation count compares the first update's loss with a zero row, ours with the start
    # point's (the paper's): for a positive loss theirs always counts an increase, so the runs agree
    # exactly when the first update raised the cross-entropy of every image. Check that it did.
    assert (result.losses[1] < result.losses[0]).all()
    assert result.steps_run == n_iter + 1  # forward+backward passes: the start point, then one per update
    # The rule fired: some images halved their step (from 2 * eps), some did not, so the run is not trivial.
    halvings = torch.log2(2 * eps / result.extra["step_size"]).round()
    assert halvings.max() >= 1
    if norm == "linf":
        assert torch.equal(result.pixels, expected_x)
        assert torch.equal(-result.best_loss, expected_loss)
    else:  # their L2 projection adds 1e-12 in one place more: equal up to float rounding
        torch.testing.assert_close(result.pixels, expected_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(-result.best_loss, expected_loss, atol=1e-5, rtol=1e-5)


def test_schedule_is_theirs():
    # autoattack: n_iter_2 = max(int(0.22 n), 1), n_iter_min = max(int(0.06 n), 1), size_decr = max(int(0.03 n), 1)
    assert schedule(101) == (22, 6, 3)
    assert schedule(1001) == (220, 60, 30)
    assert schedule(2) == (1, 1, 1)


def test_stays_in_budget_and_beats_its_start(classifier):
    x, target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([7, 7])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    for norm, eps in (("linf", 4 / 255), ("l2", 0.3), ("none", 1.0)):
        out = pgd(objective, x, PGDConfig(norm=norm, eps=eps, steps=15, optimizer="apgd"))
        delta = (out.pixels - x).flatten(1)
        assert out.pixels.min() >= 0 and out.pixels.max() <= 1
        if norm == "linf":
            assert delta.abs().max() <= eps + 1e-6
        elif norm == "l2":
            assert (delta.norm(dim=1) <= eps + 1e-5).all()
        assert (out.best_loss < objective(x, 0)).all()
        torch.testing.assert_close(objective(out.pixels, 0), out.best_loss, atol=1e-5, rtol=1e-5)


def test_universal_attack_decides_on_the_validation_score_not_the_batch_loss(classifier):
    """A universal objective's step loss carries batch noise that does not depend on the pixels (so the
    gradient is the same); with the fixed `select` score for the rule and the best point, APGD takes the
    same steps as on the noise-free objective. Deciding on the noisy step losses would not."""
    x, target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([5, 6])
    clean_loss = lambda px: F.cross_entropy(classifier(px), target, reduction="none")
    noise = torch.randn(40, 2, generator=torch.Generator().manual_seed(9)) * 3
    noisy = lambda px, step: clean_loss(px) + noise[step]
    cfg = PGDConfig(norm="linf", eps=8 / 255, steps=30, optimizer="apgd")
    expected = pgd(lambda px, _: clean_loss(px), x, cfg)
    with_select = pgd(noisy, x, cfg, select=lambda px: clean_loss(px))
    assert torch.equal(with_select.pixels, expected.pixels)
    assert torch.equal(with_select.best_loss, expected.best_loss)
    on_batches = pgd(noisy, x, cfg)  # the plausible wrong implementation: the rule on the batch losses
    assert not torch.equal(on_batches.pixels, expected.pixels)


class Killed(Exception):
    pass


def test_apgd_killed_mid_run_resumes_bit_identically(tmp_path):
    """A universal APGD attack (a new prompt batch each step, the rule on the validation batch) killed
    at step 11 and resumed from its step-9 state ends exactly as an uninterrupted run."""
    from mmsafety.synthetic import scenes  # noqa: F401  (the same objective stack as the attack)
    from visual_attacks.objectives import PromptSampler, target_string
    from visual_attacks.targets import ToolTarget

    class Adapter:
        def target_loss(self, pixels, prompts, targets):
            w = torch.tensor([1.0 + (sum(map(ord, p)) % 7) for p in prompts]).view(-1, 1, 1, 1)
            return ((pixels - 0.3) * w).pow(2).flatten(1).mean(1) + ((pixels - 0.7) * w).abs().flatten(1).mean(1)

    prompts = [f"prompt number {i}" for i in range(30)]
    target = ToolTarget("d", "function_call", "call()")
    cfg = PGDConfig(norm="linf", eps=0.3, optimizer="apgd", steps=20)
    x0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    build = lambda: target_string(Adapter(), target, PromptSampler(prompts, 3, 0))
    ref_objective = build()
    expected = pgd(ref_objective, x0, cfg, select=ref_objective.validation)
    steps_seen = []

    def attack(kill_at=None):
        objective = build()

        def maybe_killed(pixels, step):
            steps_seen.append(step)
            if step == kill_at:
                raise Killed
            return objective(pixels, step)

        ckpt = Checkpoint(tmp_path / "state.pt", 3, objective.state_dict, objective.load_state_dict)
        return pgd(maybe_killed, x0, cfg, select=objective.validation, checkpoint=ckpt)

    with pytest.raises(Killed):
        attack(kill_at=11)
    steps_seen.clear()
    resumed = attack()
    assert steps_seen[0] == 9
    assert torch.equal(resumed.pixels, expected.pixels) and torch.equal(resumed.best_loss, expected.best_loss)
    assert torch.equal(resumed.losses, expected.losses)
    assert torch.equal(resumed.extra["step_size"], expected.extra["step_size"])


def test_per_image_early_stop_freezes_the_image(classifier):
    x, target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([5, 6])
    objective = lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")
    start = objective(x, 0)
    threshold = float(start.min() + 1e-4)  # the lower image is below at once, the other is not
    out = pgd(objective, x, PGDConfig(norm="linf", eps=8 / 255, steps=12, optimizer="apgd", early_stop_loss=threshold,
                                      check_every=1))
    done = int(start.argmin())
    assert out.image_steps[done] == 1 and out.image_steps[1 - done] == 12
    assert torch.equal(out.pixels[done], x[done])  # frozen at its start point
    assert not out.stopped_early


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR2"), reason="POSIX signals")
def test_a_cluster_warning_mid_apgd_saves_the_step_reached_and_resumes_to_the_same_result(tmp_path):
    """SIGUSR2 (a cluster's warning) mid-step: APGD saves at the next step boundary, the signal goes on,
    and the requeued attack resumes there to the uninterrupted result (periodic saves are far away)."""
    import os
    import signal

    from visual_attacks.pgd import read_state

    goal = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    x0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    cfg = PGDConfig(norm="linf", eps=0.2, optimizer="apgd", steps=14)
    seen = []

    def objective(pixels, step, at=-1):
        seen.append(step)
        if step == at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return ((pixels - goal) ** 2).flatten(1).mean(1) + (pixels - goal).abs().flatten(1).mean(1)

    reference = pgd(objective, x0, cfg)

    def requeue(sig, frame):
        raise Killed

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Killed):
            pgd(lambda px, step: objective(px, step, at=6), x0, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1000))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert read_state(tmp_path / "s.pt")["step"] == 7
    seen.clear()
    resumed = pgd(objective, x0, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1000))
    assert seen[0] == 7
    assert torch.equal(resumed.pixels, reference.pixels) and torch.equal(resumed.losses, reference.losses)
