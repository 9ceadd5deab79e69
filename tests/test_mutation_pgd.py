"""PGD's attack state on disk (visual_attacks/pgd.py: Checkpoint, read_state) checked against what torch
itself writes and reads: the device a state is loaded onto, a state without the config's hash, and a
state file that would run code when unpickled. Written for `make mutation` (its `pgd` group)."""

from __future__ import annotations

import pickle

import pytest
import torch

from visual_attacks.pgd import Checkpoint, read_state


def test_a_saved_state_is_loaded_onto_the_device_asked(tmp_path):
    """Saved on the CPU, resumed on the meta device (standing in for another card): every tensor moves,
    as `torch.load(map_location=...)` moves it."""
    ckpt = Checkpoint(tmp_path / "s.pt", 1, config_sha256="a")
    ckpt.save({"x": torch.ones(2, 3), "losses": [torch.zeros(2)], "step": 4})
    state = ckpt.load("meta")
    assert state["step"] == 4 and state["x"].device.type == "meta" and state["losses"][0].device.type == "meta"
    assert read_state(tmp_path / "s.pt", "meta")["x"].device.type == "meta"
    assert read_state(tmp_path / "s.pt")["x"].device.type == "cpu"  # the default


def test_a_state_without_a_config_hash_is_not_resumed_by_a_config_that_has_one(tmp_path):
    """A state written without the hash (an older version's) counts as another config's: not resumed, no crash."""
    path = tmp_path / "s.pt"
    torch.save({"x": torch.ones(1), "step": 2, "objective": {}}, path)
    assert Checkpoint(path, 1, config_sha256="a").load("cpu") is None
    assert Checkpoint(path, 1).load("cpu")["step"] == 2  # no hash on either side: the same (unnamed) config


RAN: list[str] = []


def _record(what: str) -> str:
    RAN.append(what)
    return what


class _RunsCode:
    def __reduce__(self):
        return (_record, ("unpickled",))


def test_a_state_file_that_would_run_code_is_refused_unrun(tmp_path):
    """The docstring's promise (weights_only): a pickle that calls a function on load is an error, and the
    function never runs. Plain `pickle.loads` of the same bytes does run it (the test's own control)."""
    path = tmp_path / "s.pt"
    torch.save({"x": torch.ones(1), "evil": _RunsCode()}, path)
    RAN.clear()
    with pytest.raises(pickle.UnpicklingError):
        read_state(path)
    assert RAN == []
    pickle.loads(pickle.dumps(_RunsCode()))
    assert RAN == ["unpickled"]


def _restart_batch(classifier, n=3):
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(3)
    x, target = torch.rand(n, 3, 16, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return x, lambda px, _: F.cross_entropy(classifier(px), target, reduction="none")


def test_a_resumed_restart_attack_runs_exactly_the_passes_it_had_left(classifier, tmp_path):
    """12 passes over 3 restarts (4 each), killed at restart 1's third pass (its step 2), whose state was
    saved as that step began: the resumed attack runs restart 1's steps 2 and 3, then restart 2's four
    passes: 6, and none of restart 0's (the restarts' own checkpoint says it is done)."""
    from visual_attacks.pgd import PGDConfig, pgd

    x, objective = _restart_batch(classifier)
    cfg = PGDConfig(eps=8 / 255, step_size=1 / 255, steps=12, restarts=3)
    passes = []

    def killed_at_pass_7(px, step):
        if px.requires_grad:
            passes.append(step)
            if len(passes) == 7:
                raise KeyboardInterrupt
        return objective(px, step)

    with pytest.raises(KeyboardInterrupt):
        pgd(killed_at_pass_7, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1))
    resumed = []

    def counted(px, step):
        if px.requires_grad:
            resumed.append(step)
        return objective(px, step)

    pgd(counted, x, cfg, checkpoint=Checkpoint(tmp_path / "s.pt", 1))
    assert resumed == [2, 3, 0, 1, 2, 3]


def test_restarts_count_each_image_s_steps_in_whole_numbers_as_one_run_does(classifier):
    from visual_attacks.pgd import PGDConfig, pgd

    x, objective = _restart_batch(classifier, n=2)
    one = pgd(objective, x, PGDConfig(eps=8 / 255, steps=4, check_every=1, early_stop_loss=-1.0))
    three = pgd(objective, x, PGDConfig(eps=8 / 255, steps=6, restarts=3, check_every=1, early_stop_loss=-1.0))
    assert one.image_steps.dtype == three.image_steps.dtype == torch.long
    assert one.image_steps.tolist() == [4, 4] and three.image_steps.tolist() == [6, 6]


def _pull(target: float):
    """A loss per image that falls as its pixels approach `target`."""
    return lambda px, step: (px - target).pow(2).flatten(1).mean(1)


def test_restarts_number_their_steps_on_from_each_other_for_on_step_and_monitor():
    """6 passes over 3 restarts of 2: on_step sees steps 0..5 with each step's losses (the rows of the
    history) and a best; monitor (every step, skipping each run's step 0 as one run does) sees 1, 3, 5."""
    from visual_attacks.pgd import PGDConfig, pgd

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    seen, watched = [], []
    result = pgd(_pull(0.9), x, PGDConfig(eps=8 / 255, step_size=1 / 255, steps=6, restarts=3),
                 on_step=lambda step, loss, best: seen.append((step, loss.clone(), best.clone())),
                 monitor=lambda step, px: watched.append((step, px.shape)), monitor_every=1)
    assert [s for s, _, _ in seen] == list(range(6))
    assert torch.equal(torch.stack([loss for _, loss, _ in seen]), result.losses)
    assert all(best.shape == (2,) and torch.isfinite(best).all() for _, _, best in seen)
    assert watched == [(1, x.shape), (3, x.shape), (5, x.shape)]
    # monitor_every without a monitor watches nothing, as in one run.
    pgd(_pull(0.9), x, PGDConfig(eps=8 / 255, steps=4, restarts=2), monitor_every=1)


def test_restarts_score_with_select_when_one_is_given():
    """`select` scores each restart's pixels: the returned best loss is select's score of the returned
    pixels, with keep_best (select picks the iterate) and without it (select compares the last iterates)."""
    from visual_attacks.pgd import PGDConfig, pgd

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    def select(px):  # another target than the objective's: its scores differ from the step losses
        return _pull(0.1)(px, 0)

    for keep_best in (True, False):
        cfg = PGDConfig(eps=16 / 255, step_size=2 / 255, steps=6, restarts=3, keep_best=keep_best, select_every=1)
        result = pgd(_pull(0.9), x, cfg, select=select)
        torch.testing.assert_close(result.best_loss, select(result.pixels))
    # Without select and without keep_best, each restart is scored by its last iterate's objective.
    result = pgd(_pull(0.9), x, PGDConfig(eps=16 / 255, step_size=2 / 255, steps=6, restarts=3, keep_best=False))
    torch.testing.assert_close(result.best_loss, _pull(0.9)(result.pixels, 0))


def test_the_restarts_checkpoint_says_how_many_passes_ran(tmp_path):
    """Its `step` is what the progress counter resumes from (visual_attacks.craft.saved_step)."""
    from visual_attacks.craft import saved_step
    from visual_attacks.pgd import PGDConfig, pgd

    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    ckpt = Checkpoint(tmp_path / "s.pt", 1)
    pgd(_pull(0.9), x, PGDConfig(eps=8 / 255, steps=7, restarts=3), checkpoint=ckpt)
    assert read_state(tmp_path / "s.pt")["step"] == 7 and saved_step(ckpt) == 7


def test_zero_steps_with_restarts_return_the_clean_image_and_an_empty_history_as_one_run_does():
    from visual_attacks.pgd import PGDConfig, pgd

    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    one = pgd(_pull(0.9), x, PGDConfig(steps=0))
    two = pgd(_pull(0.9), x, PGDConfig(steps=0, restarts=2))
    assert one.losses.shape == two.losses.shape == (0, 3) and two.steps_run == 0
    assert torch.equal(two.pixels, x) and torch.equal(one.pixels, x)


def test_restarts_without_early_stop_report_like_one_run_and_say_how_many_they_were():
    """AttackResult's contract: image_steps and stopped are None when no early stop was configured (every
    image ran every step), as a single run returns them; `extra` says how many restarts there were (a public
    field of the result; nothing in the package reads it today)."""
    from visual_attacks.pgd import PGDConfig, pgd

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    one = pgd(_pull(0.9), x, PGDConfig(eps=8 / 255, steps=4))
    three = pgd(_pull(0.9), x, PGDConfig(eps=8 / 255, steps=6, restarts=3))
    assert one.image_steps is None and one.stopped is None
    assert three.image_steps is None and three.stopped is None
    assert three.extra == {"restarts": 3}


def _start(norm: str, eps: float, x0: torch.Tensor) -> torch.Tensor:
    """The random start alone: zero steps, the last iterate returned."""
    from visual_attacks.pgd import PGDConfig, pgd

    cfg = PGDConfig(norm=norm, eps=eps, steps=0, random_start=True, keep_best=False, seed=5)
    return pgd(lambda px, _: px.flatten(1).sum(1) * 0, x0, cfg).pixels


def test_an_l2_random_start_is_a_uniform_radius_in_a_random_direction_per_image():
    """Each image starts at x0 + r * d: d a random unit direction (every pixel moves, either way), r uniform on
    [0, eps] drawn per image (torchattacks' PGDL2 start). With x0 = 0.5 the box never clips, so the distances
    are the radii: inside the ball, spread over it (mean eps/2, std eps/sqrt(12)), not piled on its surface."""
    eps, x0 = 0.5, torch.full((256, 3, 8, 8), 0.5)
    delta = _start("l2", eps, x0) - x0
    dist = delta.flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-6).all()
    assert 0.45 * eps < dist.mean() < 0.55 * eps  # U(0, eps): eps/2; std of this mean about 0.018 eps
    assert 0.22 * eps < dist.std() < 0.36 * eps  # eps / sqrt(12) = 0.289 eps
    assert (dist > 0.99 * eps).float().mean() < 0.05
    moved = delta.flatten(1)
    assert 0.45 < (moved > 0).float().mean() < 0.55  # each pixel either way, as often
    # A direction, not a shift: within an image the pixels move by different amounts, and the direction
    # varies across images (each image's pixels are not a copy of another's).
    assert (moved.std(dim=1) > 0.1 * moved.abs().mean(dim=1)).all()
    unit = moved / dist.view(-1, 1)
    assert (unit[0] @ unit[1:].T).abs().max() < 0.5


def test_a_linf_random_start_is_uniform_in_the_box_not_piled_on_its_faces():
    """x0 + U[-eps, eps] per pixel (Madry et al.): |delta| uniform on [0, eps], mean eps/2, and about 1 % of
    the pixels within 1 % of the bound (noise scaled up and clipped would put most pixels there)."""
    eps, x0 = 16 / 255, torch.full((64, 3, 8, 8), 0.5)
    delta = (_start("linf", eps, x0) - x0).abs()
    assert delta.max() <= eps + 1e-7
    assert 0.47 * eps < delta.mean() < 0.53 * eps
    assert (delta > 0.99 * eps).float().mean() < 0.03


# ---- pgd() itself: what it hands on, what it reports, which pixels its callbacks see ----

def _scripted(losses: list[float]):
    """An objective whose loss at step t is losses[t] for every image, whatever the pixels (zero gradient):
    what is returned and reported can then be traced to the step that produced it."""
    def objective(px, step):
        return px.flatten(1).sum(1) * 0 + losses[step]
    return objective


def _overshoot(x0: torch.Tensor):
    """Lowest at (about) x0; a sign step of 0.1 overshoots, so every later iterate is worse than the start."""
    return lambda px, step: ((px - x0 - 1e-3) ** 2).flatten(1).sum(1)


def _cfg(**changes):
    from visual_attacks.pgd import PGDConfig

    return PGDConfig(**{"norm": "linf", "eps": 0.3, "step_size": 0.1, "steps": 4, "keep_best": True, **changes})


X = torch.full((2, 3, 4, 4), 0.5)


def test_an_optimizer_with_its_own_loop_gets_every_argument_pgd_was_given(monkeypatch):
    from visual_attacks import pgd as pgd_module

    seen = {}

    def direction(grad, cfg, state, step):
        return grad

    def attack_loop(objective, clean, cfg, **kwargs):
        seen.update(kwargs)
        return "from the loop"

    direction.attack_loop = attack_loop
    pgd_module.OPTIMIZERS.names()
    monkeypatch.setitem(pgd_module.OPTIMIZERS._items, "own_loop", direction)
    given = {"on_step": object(), "monitor": object(), "monitor_every": 7, "select": object(), "checkpoint": None,
             "succeeded": object()}
    assert pgd_module.pgd(lambda px, s: px.sum(), X, _cfg(optimizer="own_loop"), **given) == "from the loop"
    assert seen == given


def test_two_restarts_are_restarts_and_monitor_is_never_called_unless_asked():
    from visual_attacks.pgd import pgd

    assert pgd(_overshoot(X), X, _cfg(restarts=2, random_start=True)).extra == {"restarts": 2}
    calls = []
    pgd(_overshoot(X), X, _cfg(steps=3), monitor=lambda step, px: calls.append(step))
    assert calls == []  # monitor_every defaults to 0: never


def test_an_attack_that_never_improves_returns_its_start():
    """keep_best: a later iterate must score strictly lower to replace an earlier one, so a flat objective
    returns the clean image (no perturbation bought nothing), not the last iterate."""
    from visual_attacks.pgd import pgd

    # the loss is 1 at every iterate, but its gradient (1 per pixel) moves the pixels at every step
    result = pgd(lambda px, step: (px - px.detach()).flatten(1).sum(1) + 1.0, X, _cfg(steps=3))
    assert not torch.equal(pgd(lambda px, step: (px - px.detach()).flatten(1).sum(1) + 1.0, X,
                               _cfg(steps=3, keep_best=False)).pixels, X)
    assert torch.equal(result.pixels, X)


def test_select_scores_every_select_every_steps_from_the_first_and_the_last_iterate():
    from visual_attacks.pgd import pgd

    scored = []

    def select(px):
        scored.append(torch.equal(px, X))
        return px.flatten(1).sum(1) * 0
    pgd(_overshoot(X), X, _cfg(steps=25, select_every=10), select=select)
    # steps 0 (the start itself), 10, 20 (the iterates oscillate back to the start on even steps), then the
    # iterate the last update made (step 25: moved)
    assert scored == [True, True, True, False]


def test_on_step_reports_the_best_so_far_with_keep_best_and_the_step_s_loss_without():
    from visual_attacks.pgd import pgd

    for keep_best, expect in ((True, [1.0, 1.0, 0.5, 0.5]), (False, [1.0, 3.0, 0.5, 2.0])):
        shown = []
        pgd(_scripted([1.0, 3.0, 0.5, 2.0, 9.0]), X, _cfg(keep_best=keep_best),
            on_step=lambda step, loss, best: shown.append(float(best[0])))
        assert shown == expect, keep_best


def test_monitor_and_succeeded_see_the_best_iterate_with_keep_best_and_the_current_one_without():
    from visual_attacks.pgd import pgd

    for keep_best in (True, False):
        monitored, judged = [], []

        def succeeded(px):
            judged.append(px.clone())
            return torch.zeros(px.shape[0], dtype=torch.bool)
        # Each step moves every pixel down by the step size, but from step 1 on the loss carries 10 more: the
        # start stays the best iterate.
        pgd(lambda px, step: px.flatten(1).sum(1) + (10.0 if step else 0.0), X,
            _cfg(keep_best=keep_best, steps=3, check_every=1), monitor_every=1,
            monitor=lambda step, px: monitored.append(px.clone()), succeeded=succeeded)
        moved = [not torch.equal(px, X) for px in monitored + judged[1:]]
        assert moved == ([False] * len(moved) if keep_best else [True] * len(moved)), keep_best


def test_early_stop_compares_the_running_best_with_keep_best_and_the_step_s_loss_without():
    """Threshold 0.5, checked every 2 steps: the loss is 0 at step 0 and 1 after. With keep_best the best so
    far (0) is below at the check after step 1; without, the loss checked (1) never is."""
    from visual_attacks.pgd import pgd

    stopped = pgd(_scripted([0.0] + [1.0] * 9), X, _cfg(steps=8, early_stop_loss=0.5, check_every=2))
    assert stopped.stopped_early and stopped.steps_run == 2
    ran = pgd(_scripted([0.0] + [1.0] * 9), X, _cfg(steps=8, early_stop_loss=0.5, check_every=2, keep_best=False))
    assert not ran.stopped_early and ran.steps_run == 8
    # Without keep_best the step's own loss stops it, and the loss reported is the one that stopped it (the
    # returned pixels were scored at that step; no further forward)
    early = pgd(_scripted([1.0, 0.25, 0.125, 0.0, 0.0]), X, _cfg(early_stop_loss=0.5, check_every=1, keep_best=False))
    assert early.stopped_early and early.steps_run == 2 and early.best_loss.tolist() == [0.25, 0.25]


def test_the_returned_iterate_after_the_last_update_is_scored_at_step_steps_run():
    """The last update's iterate is scored once more, as step `steps` of the objective (a step-dependent
    objective, e.g. a prompt drawn per step, sees the next step's index)."""
    from visual_attacks.pgd import pgd

    assert pgd(_scripted([3.0, 3.0, 3.0, 0.25]), X, _cfg(steps=3)).best_loss.tolist() == [0.25, 0.25]
    assert pgd(_scripted([3.0, 3.0, 3.0, 0.75]), X, _cfg(steps=3, keep_best=False)).best_loss.tolist() == [0.75, 0.75]


def test_zero_steps_give_an_empty_history_of_one_column_per_image():
    from visual_attacks.pgd import pgd

    assert pgd(_overshoot(X), X, _cfg(steps=0)).losses.shape == (0, 2)


def test_without_a_checkpoint_a_signal_acts_at_once_and_nothing_fails_on_the_way():
    """No checkpoint, so no handler: SIGTERM at step 1 of 12 ends the attack there, by the handler alone
    (holding it would try to save to no checkpoint at the next step, an error the handler then hides)."""
    import os
    import signal

    from visual_attacks.pgd import pgd

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    seen = []

    def objective(px, step):
        seen.append(step)
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return px.flatten(1).sum(1)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Interrupted) as raised:
            pgd(objective, X, _cfg(steps=12))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [0, 1] and raised.value.__context__ is None


# ---- EarlyStop ----

def test_early_stop_state_is_made_on_the_device_asked_with_integer_counts():
    from visual_attacks.pgd import EarlyStop

    stop = EarlyStop(_cfg(early_stop_loss=0.1), 3, torch.device("meta"))
    assert {k: (v.device.type, v.dtype) for k, v in stop.state().items()} == {
        "active": ("meta", torch.bool), "below": ("meta", torch.long), "image_steps": ("meta", torch.long)}


def test_early_stop_needs_a_loss_strictly_below_the_threshold_and_either_rule_stops_an_image():
    from visual_attacks.pgd import EarlyStop

    stop = EarlyStop(_cfg(early_stop_loss=0.5, check_every=1), 3, "cpu",
                     succeeded=lambda px: px.flatten(1)[:, 0] > 0.9)
    candidate = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    stop.check(0, torch.tensor([0.5, 0.4, 0.8]), candidate)
    # image 0 sits on the threshold (not below), image 1 is below it, image 2 succeeded
    assert stop.active.tolist() == [True, False, False]


def test_a_stopped_image_keeps_its_pixels():
    from visual_attacks.pgd import EarlyStop

    stop = EarlyStop(_cfg(early_stop_loss=0.5, check_every=1), 2, "cpu")
    stop.check(0, torch.tensor([0.1, 0.9]), X)
    new, old = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    kept = stop.freeze(new, old)
    assert torch.equal(kept[0], old[0]) and torch.equal(kept[1], new[1])
