"""attack.restarts: the forward+backward budget is shared out over runs from different seeded random
starts in the ball, each image keeps its best run, an image that stopped sits the later runs out,
and a killed attack resumes mid-restart bit-identically."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mmsafety.errors import ConfigError
from visual_attacks.pgd import Checkpoint, PGDConfig, _random_start, pgd, restart_steps

EPS = 8 / 255


def _batch(classifier, n=6):
    gen = torch.Generator().manual_seed(3)
    x, target = torch.rand(n, 3, 16, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return x, lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")


class Recorder:
    """The objective, remembering the pixels of every pass that takes a gradient."""

    def __init__(self, objective):
        self.objective, self.starts = objective, []

    def __call__(self, px, step):
        if px.requires_grad:
            self.starts.append(px.detach().clone())
        return self.objective(px, step)


def test_budget_is_shared_out_and_each_restart_starts_from_its_own_seeded_point_in_the_ball(classifier):
    assert restart_steps(10, 3) == [4, 3, 3] and sum(restart_steps(7, 7)) == 7
    x, objective = _batch(classifier)
    cfg = PGDConfig(eps=EPS, step_size=1 / 255, steps=9, restarts=3, seed=5)
    rec = Recorder(objective)
    result = pgd(rec, x, cfg)
    assert len(rec.starts) == 9 and result.steps_run == 9 and result.losses.shape == (9, 6)  # 9 passes in all
    starts = [rec.starts[0], rec.starts[3], rec.starts[6]]
    for r, start in enumerate(starts):
        assert torch.equal(start, _random_start(x, dataclasses.replace(cfg, seed=5 + r), torch.Generator().manual_seed(5 + r)))
        assert (start - x).abs().max() <= EPS + 1e-6 and (start - x).abs().max() > EPS / 2  # in the ball, not the clean image
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])


def test_each_image_keeps_the_best_of_its_restarts(classifier):
    x, objective = _batch(classifier)
    cfg = PGDConfig(eps=EPS, step_size=1 / 255, steps=12, restarts=3, seed=0)
    runs = [pgd(objective, x, dataclasses.replace(cfg, restarts=1, steps=4, random_start=True, seed=r)) for r in range(3)]
    losses = torch.stack([run.best_loss for run in runs])  # [restart, image]
    winner = losses.argmin(0)
    assert len(set(winner.tolist())) > 1, "the test needs images whose best restart differs"
    result = pgd(objective, x, cfg)
    assert torch.equal(result.best_loss, losses.min(0).values)
    for i, r in enumerate(winner.tolist()):
        assert torch.equal(result.pixels[i], runs[r].pixels[i])
    assert torch.equal(result.losses, torch.cat([run.losses for run in runs]))


def test_an_image_that_stopped_keeps_its_restart_and_sits_the_later_ones_out(classifier):
    x, objective = _batch(classifier, n=2)
    calls = []

    def succeeded(pixels):  # image 0 succeeds at the very first check (restart 0, step 0); nothing else does
        calls.append(pixels.shape[0])
        return torch.tensor([len(calls) == 1] + [False] * (pixels.shape[0] - 1))

    cfg = PGDConfig(eps=EPS, step_size=1 / 255, steps=9, restarts=3, check_every=1)
    result = pgd(objective, x, cfg, succeeded=succeeded)
    start0 = _random_start(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(result.pixels[0], start0[0])  # restart 0's pixels, though later restarts lowered its loss
    assert result.image_steps.tolist() == [1, 9] and result.stopped.tolist() == [True, False]
    assert not result.stopped_early
    assert torch.isnan(result.losses[1:, 0]).all() and not torch.isnan(result.losses[:, 1]).any()


def test_every_image_stopped_ends_the_restarts(classifier):
    x, objective = _batch(classifier, n=2)
    rec = Recorder(objective)
    result = pgd(rec, x, PGDConfig(eps=EPS, steps=9, restarts=3, check_every=1), succeeded=lambda px: torch.ones(px.shape[0], dtype=torch.bool))
    assert len(rec.starts) == 1 and result.stopped_early and result.image_steps.tolist() == [1, 1]


@pytest.mark.parametrize("optimizer", ["sign", "apgd"])
def test_a_killed_attack_resumes_mid_restart_bit_identically(classifier, tmp_path, optimizer):
    x, objective = _batch(classifier, n=3)
    cfg = PGDConfig(eps=EPS, step_size=1 / 255, steps=12, restarts=3, optimizer=optimizer)
    expected = pgd(objective, x, cfg)

    class Killed(Exception):
        pass

    passes = []

    def killed_in_restart_1(px, step):  # restart 1 is passes 4..7: die at its third
        if px.requires_grad:
            passes.append(step)
            if len(passes) == 7:
                raise Killed
        return objective(px, step)

    with pytest.raises(Killed):
        pgd(killed_in_restart_1, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1))
    assert (tmp_path / "s.pt").exists() and (tmp_path / "s-restart1.pt").exists()
    rec = Recorder(objective)
    resumed = pgd(rec, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1))
    assert len(rec.starts) < 12 - 4  # restart 0 is not run again, nor the start of restart 1
    assert torch.equal(resumed.pixels, expected.pixels) and torch.equal(resumed.best_loss, expected.best_loss)
    assert torch.equal(resumed.losses, expected.losses)


def test_more_restarts_than_steps_is_one_line():
    from visual_attacks.config import AttackConfig, validate_attack

    attack = OmegaConf.merge(OmegaConf.structured(AttackConfig), {"name": "x", "steps": 3, "restarts": 4})
    with pytest.raises(ConfigError, match="attack.restarts=4 is more than attack.steps=3"):
        validate_attack(attack)
    with pytest.raises(ConfigError, match="attack.restarts=0: must be >= 1"):
        validate_attack(OmegaConf.merge(attack, {"restarts": 0}))
