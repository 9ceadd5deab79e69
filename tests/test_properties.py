"""Properties that should hold for every input, checked with hypothesis (issue 36, "property-based tests"):

- every PGD iterate stays in the eps-ball around the clean image and in [0, 1], for any image, budget,
  norm, optimizer, step size and random start (and on the 8-bit grid when quantising);
- GOAT-Bench metrics do not depend on the order of the samples, and equal accuracy and macro-F1
  counted by hand;
- merging records (the leaderboard's de-duplication) is idempotent and order-free: any overlapping,
  repeated shards of one run, in any order, give the run's samples;
- an interrupted-then-resumed PGD attack (state checkpointed to disk) returns what an uninterrupted
  one returns, bit for bit on the CPU; likewise a GOAT run interrupted after any batch.

Objectives are cheap closed-form functions of the pixels, so each property runs in seconds;
max_examples stays modest (the suite runs on 2 shared cores), and derandomize keeps CI reproducible.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from goat_bench.evaluate import score_samples
from goat_bench.metrics import task_metrics
from mmsafety.leaderboard.collect import _merge_samples
from visual_attacks.pgd import Checkpoint, PGDConfig, pgd

FAST = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOWER = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------------------
# PGD: feasibility of every iterate


def closed_form_objective(seed: int, seen: list[torch.Tensor]):
    """A fixed random quadratic-plus-linear loss per image (gradients vary in sign and size, so sign,
    sgd and adam steps all move the image around), recording every iterate it is asked to score."""
    gen = torch.Generator().manual_seed(seed)
    centre, slope = None, None

    def objective(x: torch.Tensor, step: int) -> torch.Tensor:
        nonlocal centre, slope
        if centre is None:
            centre = torch.rand(x.shape, generator=gen) * 1.6 - 0.3  # partly outside [0,1]: pushes at the box
            slope = torch.randn(x.shape, generator=gen)
        seen.append(x.detach().clone())
        return ((x - centre) ** 2 + 0.3 * slope * x).flatten(1).sum(1)

    return objective


@st.composite
def attacks(draw):
    norm = draw(st.sampled_from(["linf", "l2", "none"]))
    eps = draw(st.floats(0.0, 0.5 if norm == "linf" else 3.0, allow_nan=False))
    cfg = PGDConfig(norm=norm, eps=eps, step_size=draw(st.floats(1e-3, 0.3)), steps=draw(st.integers(1, 12)),
                    random_start=draw(st.booleans()), optimizer=draw(st.sampled_from(["sign", "sgd", "adam"])),
                    keep_best=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))
    shape = (draw(st.integers(1, 3)), 3, draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    clean = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    # Images at the edges of the box too: saturated pixels are where a clamp is easy to get wrong.
    edges = draw(st.sampled_from(["none", "zeros", "ones", "binary"]))
    if edges == "zeros":
        clean = torch.zeros(shape)
    elif edges == "ones":
        clean = torch.ones(shape)
    elif edges == "binary":
        clean = clean.round()
    return cfg, clean, draw(st.integers(0, 2**16))


def assert_feasible(x: torch.Tensor, clean: torch.Tensor, cfg: PGDConfig) -> None:
    tol = 1e-6  # float32 rounding of x0 +- eps
    assert x.min() >= 0 and x.max() <= 1
    delta = (x - clean).flatten(1)
    if cfg.norm == "linf":
        assert delta.abs().max() <= cfg.eps + tol
    elif cfg.norm == "l2":
        assert (delta.norm(dim=1) <= cfg.eps * (1 + 1e-5) + tol).all()


@FAST
@given(attacks())
def test_every_pgd_iterate_stays_in_the_ball_and_the_box(attack):
    cfg, clean, seed = attack
    seen: list[torch.Tensor] = []
    result = pgd(closed_form_objective(seed, seen), clean, cfg)
    assert len(seen) >= cfg.steps  # every step's iterate, plus the last one when it is scored
    for x in [*seen, result.pixels]:
        assert_feasible(x, clean, cfg)


@FAST
@given(eps_levels=st.integers(0, 40), step_levels=st.integers(1, 20), steps=st.integers(1, 10),
       seed=st.integers(0, 2**16), random_start=st.booleans())
def test_quantised_linf_iterates_stay_on_the_8_bit_grid_inside_the_ball(eps_levels, step_levels, steps, seed,
                                                                          random_start):
    """With the clean image and eps on the 8-bit grid, rounding to the grid never leaves the ball
    (x0 +- eps are grid points), and every iterate is a storable PNG."""
    clean = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(seed)).float() / 255
    cfg = PGDConfig(norm="linf", eps=eps_levels / 255, step_size=step_levels / 255 * 0.7, steps=steps,
                    random_start=random_start, quantize=True, seed=seed)
    seen: list[torch.Tensor] = []
    result = pgd(closed_form_objective(seed, seen), clean, cfg)
    for x in [*seen[1:], result.pixels]:  # seen[0]: the start, off the grid after a random start
        assert_feasible(x, clean, cfg)
        assert torch.equal(x, (x * 255).round() / 255)


@FAST
@given(norm=st.sampled_from(["linf", "l2", "none"]), eps=st.floats(0.0, 2.0), seed=st.integers(0, 2**16),
       spread=st.floats(0.0, 3.0))
# An L2 perturbation shorter than 1 but outside the ball (eps = 0.1 < |delta| ~ 0.4 < 1): the random draws
# rarely hit it, and a norm floored at 1 instead of 1e-12 is wrong only there.
@example(norm="l2", eps=0.1, seed=0, spread=0.2)
def test_the_projection_is_the_nearest_feasible_point(norm, eps, seed, spread):
    """Feasibility alone passes a projection that ignores its input (every iterate pinned inside the
    ball): the projected point must also be the textbook one, computed here in numpy. L-inf: clip to
    the ball then to [0,1] (the nearest point of their intersection, coordinate by coordinate); L2:
    scale the perturbation onto the ball when it is outside, then clip to [0,1], as the module states."""
    import numpy as np

    from visual_attacks.pgd import _project

    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 3, 4, 4, generator=gen)
    x = x0 + spread * (torch.rand(x0.shape, generator=gen) - 0.5)
    a, a0 = x.double().numpy(), x0.double().numpy()
    if norm == "linf":
        expected = np.clip(np.clip(a, a0 - eps, a0 + eps), 0, 1)
    elif norm == "l2":
        delta = a - a0
        length = np.sqrt((delta.reshape(2, -1) ** 2).sum(1)).reshape(2, 1, 1, 1)
        expected = np.clip(a0 + delta * np.minimum(1.0, eps / np.maximum(length, 1e-12)), 0, 1)
    else:
        expected = np.clip(a, 0, 1)
    projected = _project(x, x0, PGDConfig(norm=norm, eps=eps))
    assert np.allclose(projected.double().numpy(), expected, atol=1e-6)
    if norm != "l2":  # clipping is exactly idempotent; rescaling onto the sphere only up to rounding
        assert torch.equal(_project(projected, x0, PGDConfig(norm=norm, eps=eps)), projected)


# ----------------------------------------------------------------------------------------------------
# Metrics: order-free, and equal to counting by hand

labels_and_preds = st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0, 1, None])), min_size=1, max_size=40)


def by_hand(pairs) -> tuple[float, float]:
    """Accuracy and macro-F1 in %, an invalid answer (None) counted as the wrong class; macro-F1 averages
    the classes that occur in the labels or the predictions (torchmetrics' and scikit-learn's default:
    a task whose memes are all of one class, all right, scores 100, not 50)."""
    scored = [(y, (1 - y) if p is None else p) for y, p in pairs]
    accuracy = 100 * sum(y == p for y, p in scored) / len(scored)
    f1s = []
    for c in (0, 1):
        tp = sum(y == c and p == c for y, p in scored)
        fp = sum(y != c and p == c for y, p in scored)
        fn = sum(y == c and p != c for y, p in scored)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, 100 * sum(f1s) / len(f1s)


@FAST
@given(pairs=labels_and_preds, order=st.randoms(use_true_random=False))
def test_task_metrics_are_order_free_and_equal_counting_by_hand(pairs, order):
    shuffled = list(pairs)
    order.shuffle(shuffled)
    # bootstrap=0: the bootstrap intervals resample positions, so they depend on the order by design.
    a = task_metrics([y for y, _ in pairs], [p for _, p in pairs], bootstrap=0)
    b = task_metrics([y for y, _ in shuffled], [p for _, p in shuffled], bootstrap=0)
    assert a == b
    accuracy, macro_f1 = by_hand(pairs)
    assert abs(a["accuracy"] - accuracy) < 1e-4 and abs(a["macro_f1"] - macro_f1) < 1e-4
    assert a["invalid"] == sum(p is None for _, p in pairs)


TASKS = ["hatefulness", "sarcasm", "misogyny"]


@st.composite
def goat_samples(draw, max_size=30):
    """Samples as evaluate() writes them, unique per (task, id); ids are shared across tasks."""
    keys = draw(st.lists(st.tuples(st.sampled_from(TASKS), st.sampled_from([f"{k:03d}" for k in range(12)])),
                         min_size=1, max_size=max_size, unique=True))
    samples = []
    for task, sid in keys:
        status = draw(st.sampled_from(["ok", "ok", "ok", "skipped"]))
        label = draw(st.integers(0, 1))
        if status == "skipped":
            samples.append({"task": task, "id": sid, "status": "skipped", "reason": "unreadable image", "label": label,
                            "notes": []})
            continue
        pred = draw(st.sampled_from([0, 1, None]))
        samples.append({"task": task, "id": sid, "status": "ok", "label": label, "pred": pred,
                        "parse": "logprob", "correct": pred == label, "notes": []})
    return samples


def without_intervals(metrics: dict) -> dict:
    return {task: {k: v for k, v in m.items() if k != "ci95"} for task, m in metrics["per_task"].items()}


@FAST
@given(samples=goat_samples(), order=st.randoms(use_true_random=False))
def test_scores_of_a_run_are_order_free(samples, order):
    shuffled = list(samples)
    order.shuffle(shuffled)
    a, b = score_samples(samples, TASKS), score_samples(shuffled, TASKS)
    assert without_intervals(a) == without_intervals(b)
    assert {k: v for k, v in a["overall"].items()} == {k: v for k, v in b["overall"].items()}


# ----------------------------------------------------------------------------------------------------
# Merging records


def canonical(samples: list[dict]) -> list[str]:
    return sorted(json.dumps(s, sort_keys=True) for s in samples)


def write_records(root: Path, shards: list[list[dict]]) -> list[Path]:
    paths = []
    for k, shard in enumerate(shards):
        folder = root / f"r{k}"
        folder.mkdir()
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in shard))
        paths.append(folder / "record.json")  # _merge_samples reads the samples beside each record
    return paths


@SLOWER
@given(samples=goat_samples(), data=st.data())
def test_merging_overlapping_repeated_shards_in_any_order_gives_the_run(samples, data):
    """Shards: random subsets of the run (overlapping) that together cover it, some repeated, in a
    random order. Their merge holds each sample once: the run's samples, whatever the order; merging
    the merge's inputs twice over changes nothing (idempotent)."""
    n = len(samples)
    membership = data.draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=4))
    shards = [[s for s, keep in zip(samples, row) if keep] for row in membership]
    shards.append([s for k, s in enumerate(samples) if not any(row[k] for row in membership)])  # cover the rest
    shards += data.draw(st.lists(st.sampled_from(shards), max_size=2))  # repeated shards
    shards = data.draw(st.permutations(shards))
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_records(Path(tmp), shards)
        merged = _merge_samples(paths, ["task", "id"], "goat_bench", problems)
        assert canonical(merged) == canonical(samples)
        assert canonical(_merge_samples(paths + paths, ["task", "id"], "goat_bench", problems)) == canonical(merged)
        assert canonical(_merge_samples(paths[::-1], ["task", "id"], "goat_bench", problems)) == canonical(merged)
    assert not problems
    assert without_intervals(score_samples(merged, TASKS)) == without_intervals(score_samples(samples, TASKS))


# ----------------------------------------------------------------------------------------------------
# Interrupted then resumed equals uninterrupted


class Killed(Exception):
    pass


def stops_at(objective, step_to_die: int):
    """The objective, except that the job dies when asked to score step `step_to_die`."""
    def dying(x, step):
        if step == step_to_die:
            raise Killed
        return objective(x, step)
    return dying


@SLOWER
@given(attack=attacks(), every=st.integers(1, 5), data=st.data())
def test_a_pgd_attack_killed_and_resumed_from_its_checkpoint_equals_an_uninterrupted_one(attack, every, data):
    cfg, clean, seed = attack
    die_at = data.draw(st.integers(0, cfg.steps - 1))
    whole = pgd(closed_form_objective(seed, []), clean, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Checkpoint(Path(tmp) / "state.pt", every)
        try:
            pgd(stops_at(closed_form_objective(seed, []), die_at), clean, cfg, checkpoint=checkpoint)
            raise AssertionError("the first run was meant to die")
        except Killed:
            pass
        resumed = pgd(closed_form_objective(seed, []), clean, cfg, checkpoint=checkpoint)
    assert resumed.steps_run == whole.steps_run
    assert torch.equal(resumed.pixels, whole.pixels) and torch.equal(resumed.losses, whole.losses)
    assert torch.equal(resumed.best_loss, whole.best_loss)


# A library imported on the first run (record versions) raises the recursion limit; hypothesis warns that it
# will not reset it, which is harmless here.
@pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(batch_size=st.integers(1, 5), data=st.data())
def test_a_goat_run_interrupted_after_any_batch_and_resumed_equals_an_uninterrupted_one(batch_size, data):
    from tests.test_resume_shared_ids import comparable, run, write_shared_id_tasks

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = write_shared_id_tasks(root / "data")
        batches = -(-len(labels) // batch_size)
        stop_at = data.draw(st.integers(0, batches - 1))
        first, metrics = run(root / "run", root / "data", batch_size, stop_at=stop_at)
        assert metrics is None
        second, resumed = run(root / "run", root / "data", batch_size)
        _, whole = run(root / "whole", root / "data", batch_size)
        assert first.scored + second.scored == len(labels)
        assert comparable(root / "run") == comparable(root / "whole")
        assert resumed["per_task"] == whole["per_task"]
