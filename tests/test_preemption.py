"""A cluster's warning (SIGUSR2) or preemption (SIGTERM) mid-attack saves the state at the step reached,
then lets the signal go on; the requeued attack resumes there and ends exactly where an uninterrupted one
ends. The periodic save is set far away (every 1000 steps), so only the save on signal can explain a
resume from the step reached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from visual_attacks.pgd import Checkpoint, PGDConfig, pgd, read_state

CFG = PGDConfig(norm="linf", eps=0.2, optimizer="adam", step_size=0.01, steps=12, keep_best=False)
X0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
GOAL = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))


class Requeued(Exception):
    """What submitit's handler does after requeueing (it calls sys.exit)."""


def objective(pixels, step):
    return ((pixels - GOAL) ** 2).flatten(1).mean(1)


def signalling(signum, at_step, seen):
    def loss(pixels, step):
        seen.append(step)
        if step == at_step:
            os.kill(os.getpid(), signum)  # arrives mid-step, while the gradient is being taken
        return objective(pixels, step)
    return loss


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")
@pytest.mark.parametrize("signum", [getattr(signal, "SIGUSR2", 0), signal.SIGTERM])
def test_a_signal_mid_attack_saves_the_step_reached_and_the_resumed_attack_equals_an_uninterrupted_one(tmp_path, signum):
    reference = pgd(objective, X0, CFG)
    path, seen = tmp_path / "state.pt", []

    def requeue(sig, frame):
        raise Requeued(sig)

    previous = signal.signal(signum, requeue)
    try:
        with pytest.raises(Requeued):
            pgd(signalling(signum, 4, seen), X0, CFG, checkpoint=Checkpoint(path, 1000))
        assert signal.getsignal(signum) is requeue  # the previous handler is back
    finally:
        signal.signal(signum, previous)
    assert seen == [0, 1, 2, 3, 4]  # the signal was held to the next step boundary, not acted on mid-step
    assert read_state(path)["step"] == 5  # steps 0-4 done: saved at the boundary it reached

    seen.clear()
    resumed = pgd(signalling(signum, -1, seen), X0, CFG, checkpoint=Checkpoint(path, 1000))
    assert seen[0] == 5
    assert torch.equal(resumed.pixels, reference.pixels) and torch.equal(resumed.losses, reference.losses)


def test_without_a_handler_the_signal_still_ends_the_process_after_the_save(tmp_path):
    """SIGTERM with its default action (a preempted job outside submitit): the state is saved, then the
    process ends by the signal, as it would have without mmsafety."""
    path = tmp_path / "state.pt"
    child = textwrap.dedent(f"""
        import os, signal, torch
        from pathlib import Path
        from visual_attacks.pgd import Checkpoint, PGDConfig, pgd
        cfg = PGDConfig(norm="linf", eps=0.2, optimizer="adam", step_size=0.01, steps=50, keep_best=False)
        x0 = torch.rand(1, 3, 4, 4)
        def loss(pixels, step):
            if step == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            return (pixels ** 2).flatten(1).mean(1)
        pgd(loss, x0, cfg, checkpoint=Checkpoint(Path({str(path)!r}), 1000))
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "not reached" not in done.stdout
    assert read_state(path)["step"] == 8


def test_without_a_checkpoint_signals_are_not_touched():
    """No state to save: the attack installs nothing, so a signal acts at once as it always did."""
    seen = []

    def interrupt(sig, frame):
        raise Requeued(sig)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Requeued):
            pgd(signalling(signal.SIGTERM, 2, seen), X0, CFG)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [0, 1, 2]


def test_a_requeue_cut_short_by_slurm_ends_the_job_as_a_clean_requeue(tmp_path):
    """SLURM terminates the job step while submitit's `scontrol requeue` is still running: the requeue
    happened, so the attack ends as after a clean requeue (SystemExit), with its state saved, instead of
    returning the killed scontrol as the job's result."""
    import subprocess

    def submitit_requeue(sig, frame):
        raise subprocess.CalledProcessError(-signal.SIGTERM, ["scontrol", "requeue", "7"])

    path = tmp_path / "state.pt"
    previous = signal.signal(signal.SIGUSR2, submitit_requeue)
    try:
        with pytest.raises(SystemExit):
            pgd(signalling(signal.SIGUSR2, 3, []), X0, CFG, checkpoint=Checkpoint(path, 1000))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert read_state(path)["step"] == 4

    def other_failure(sig, frame):
        raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "7"])

    previous = signal.signal(signal.SIGUSR2, other_failure)
    try:
        with pytest.raises(subprocess.CalledProcessError):  # a refused requeue is still an error
            pgd(signalling(signal.SIGUSR2, 3, []), X0, CFG, checkpoint=Checkpoint(tmp_path / "b.pt", 1000))
    finally:
        signal.signal(signal.SIGUSR2, previous)
