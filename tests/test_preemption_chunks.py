"""A cluster's warning (SIGUSR2) while an attack crafts its second chunk of images: the first chunk was
finished but its samples are written only once every chunk is crafted and judged, so the requeued job
must take it from the saved results (visual_attacks.craft.save_crafted), not attack it again, and the
second chunk resumes from the step it reached. The PNGs and samples equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import visual_attacks.craft
import visual_attacks.run
from visual_attacks.cli import run_attack_job

pytestmark = pytest.mark.slow
CONFIG = ["images=2", "attack.images_per_batch=1", "heldout_prompts=4", "attack.steps=30",
          "attack.checkpoint_every=1000", "attack.early_stop_loss=null"]


class Requeued(BaseException):
    """What submitit's handler does once it has requeued the job (sys.exit)."""


def samples(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k}  # wall-clock aside
            for line in (folder / "samples.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")
def test_a_requeue_in_the_second_chunk_does_not_attack_the_first_again(tmp_path, monkeypatch):
    run_attack_job(tmp_path / "reference", *CONFIG)
    real_pgd, runs = visual_attacks.craft.pgd, []

    def pgd(objective, clean, cfg, *args, **kwargs):
        runs.append([])

        def counted(pixels, step):
            runs[-1].append(step)
            if len(runs) == 2 and step == 10 and not stopped:
                os.kill(os.getpid(), signal.SIGUSR2)  # mid-step of the second chunk
            return objective(pixels, step)
        return real_pgd(counted, clean, cfg, *args, **kwargs)

    def requeue(signum, frame):
        raise Requeued(signum)

    stopped = False
    monkeypatch.setattr(visual_attacks.craft, "pgd", pgd)
    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Requeued):
            run_attack_job(tmp_path / "run", *CONFIG)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    stopped = True
    assert len(runs) == 2 and runs[1][-1] == 10, [r[-1:] for r in runs]  # stopped in the second chunk

    runs.clear()
    run_attack_job(tmp_path / "run", *CONFIG)
    assert len(runs) == 1 and runs[0][0] == 11, [r[:1] for r in runs]  # only the second chunk, from its step
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "completed"
    assert not list((tmp_path / "run").glob("attack_state*.pt"))  # nothing left to resume
    pngs = lambda folder: {p.name: p.read_bytes() for p in folder.rglob("*.png")}  # noqa: E731
    assert pngs(tmp_path / "run") == pngs(tmp_path / "reference") and len(pngs(tmp_path / "reference")) >= 4
    assert samples(tmp_path / "run") == samples(tmp_path / "reference")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")
def test_a_requeue_while_judging_writes_the_image_being_judged_and_attacks_nothing_again(tmp_path, monkeypatch):
    run_attack_job(tmp_path / "reference", *CONFIG)
    real_judge, judged, attacked = visual_attacks.run.judge_pair, [], []

    def judge_pair(case, adapter, base, *args):
        judged.append(base.key)
        if len(judged) == 1:
            os.kill(os.getpid(), signal.SIGUSR2)  # while the first image is being judged
        return real_judge(case, adapter, base, *args)

    def requeue(signum, frame):
        raise Requeued(signum)

    monkeypatch.setattr(visual_attacks.run, "judge_pair", judge_pair)
    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Requeued):
            run_attack_job(tmp_path / "run", *CONFIG)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert len(judged) == 1 and len(samples(tmp_path / "run")) == 1  # judged and written, then stopped

    real_pgd = visual_attacks.craft.pgd
    monkeypatch.setattr(visual_attacks.craft, "pgd", lambda *a, **k: attacked.append(1) or real_pgd(*a, **k))
    run_attack_job(tmp_path / "run", *CONFIG)
    assert attacked == [] and len(judged) == 2  # both chunks from their saved results; the second image judged
    # The crafted images (the loss curve's plot of image 0 is redrawn from loss_curve.csv's rounded text, as
    # for any resume after written samples)
    pngs = lambda folder: {p.name: p.read_bytes() for p in (folder / "images").glob("*.png")}  # noqa: E731
    assert pngs(tmp_path / "run") == pngs(tmp_path / "reference")
    assert samples(tmp_path / "run") == samples(tmp_path / "reference")
