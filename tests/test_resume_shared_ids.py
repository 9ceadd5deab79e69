"""Resume across GOAT-Bench tasks that share sample ids (issue 36 item 2).

Real GOAT-Bench tasks come from five datasets whose ids are their own image file names, and nothing
keeps them unique across tasks; the synthetic memes carry their task's name in the id, so the suite
could never see a collision. Here two tasks use the same ids (with different labels), a run is
interrupted part-way and resumed in the same folder, and every meme must be scored exactly once per
task, the same as an uninterrupted run. A resume keyed on the id alone skips the second task's memes
whose ids the first task finished.

The model is a stand-in that reads the answer off the image (cheap: the test is about bookkeeping)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from goat_bench.evaluate import evaluate
from mmsafety.record_kinds import schema_of
from mmsafety.records import RunRecord

TASKS = ["hatefulness", "sarcasm"]
IDS = [f"{k:04d}" for k in range(1, 7)]  # the same six file names in both tasks


def write_shared_id_tasks(root: Path) -> dict[tuple[str, str], int]:
    """Both tasks in the GOAT-Bench layout with the same ids; labels differ between the tasks for the
    same id, so a meme scored under the other task's entry would also have the wrong label.
    Returns (task, id) -> label."""
    labels = {}
    for t, task in enumerate(TASKS):
        (root / task / "images").mkdir(parents=True)
        lines = []
        for k, sid in enumerate(IDS):
            label = (k + t) % 2
            # The image carries the answer (bright: Yes) so the stand-in model gets it right.
            Image.new("RGB", (8, 8), (230, 230, 230) if label else (20, 20, 20)).save(root / task / "images" / f"{sid}.png")
            lines.append(json.dumps({"id": sid, "img": f"images/{sid}.png", "text": "same caption", "label": label}))
            labels[(task, sid)] = label
        (root / task / "test.jsonl").write_text("\n".join(lines) + "\n")
    return labels


class Interrupted(Exception):
    """Stands for the job being killed: raised from inside the model call, after earlier batches were saved."""


class ImageReader:
    """A stand-in model: log p(Yes) is high on a bright image. Counts the memes it scores, and raises
    `Interrupted` when asked for batch number `stop_at` (0-based; None: never)."""

    name, model_id, weights_sha256 = "image-reader", "image-reader", "0" * 64

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.batches, self.scored = stop_at, 0, 0

    def choice_logprobs(self, images, prompts, choices):
        if self.batches == self.stop_at:
            raise Interrupted
        self.batches += 1
        self.scored += len(images)
        bright = torch.tensor([float(np.asarray(im.convert("L")).mean()) / 255 for im in images])
        yes = torch.where(bright > 0.5, -0.1, -3.0)
        return torch.stack([yes, -3.1 - yes], dim=1)


def eval_config(root: Path, batch_size: int):
    return OmegaConf.create({
        "scoring": "logprob", "batch_size": batch_size, "max_new_tokens": None, "image_workers": 0,
        "shard": 0, "num_shards": 1, "seed": 0, "model": {"name": "image-reader"},
        "task": {"name": "shared", "tasks": TASKS, "root": str(root), "synthetic_per_task": 0, "limit": None,
                 "prompt": "paper"},
    })


def run(out: Path, root: Path, batch_size: int, stop_at: int | None = None) -> tuple[ImageReader, dict | None]:
    """One job on `out` (resuming what is there); the model, and the metrics (None when interrupted)."""
    cfg = eval_config(root, batch_size)
    model, record = ImageReader(stop_at), RunRecord.open(out, "goat_bench", OmegaConf.to_container(cfg),
                                                         schema=schema_of("goat_bench"))
    try:
        metrics = evaluate(cfg, model, record, log=lambda *_: None)
    except Interrupted:
        return model, None
    finally:
        record.close()
    return model, metrics


def scored_keys(out: Path) -> Counter:
    return Counter((s["task"], s["id"]) for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines()))


def comparable(out: Path) -> list[tuple]:
    samples = map(json.loads, (out / "samples.jsonl").read_text().splitlines())
    return sorted((s["task"], s["id"], s["status"], s["label"], s["pred"], s["correct"]) for s in samples)


@pytest.mark.parametrize("stop_at", [1, 2, 4])
def test_a_resumed_run_scores_every_meme_once_per_task_when_tasks_share_ids(tmp_path, stop_at):
    labels = write_shared_id_tasks(tmp_path / "data")
    batch_size = 2
    first, metrics = run(tmp_path / "run", tmp_path / "data", batch_size, stop_at=stop_at)
    assert metrics is None and first.scored == stop_at * batch_size  # really interrupted part-way
    done_before = scored_keys(tmp_path / "run")
    # Same captions, so memes run in (task, id) order: the interruption leaves one task's ids done
    # while the other task's memes with those ids are not.
    assert any((TASKS[1], sid) not in done_before for task, sid in done_before if task == TASKS[0])

    second, metrics = run(tmp_path / "run", tmp_path / "data", batch_size)
    assert second.scored == len(labels) - first.scored  # nothing redone, nothing left out
    assert scored_keys(tmp_path / "run") == Counter(labels.keys())  # each (task, id) exactly once
    for task in TASKS:
        assert metrics["per_task"][task]["n"] == len(IDS) and metrics["per_task"][task]["accuracy"] == 100.0

    _, whole = run(tmp_path / "whole", tmp_path / "data", batch_size)
    assert comparable(tmp_path / "run") == comparable(tmp_path / "whole")
    assert metrics["per_task"] == whole["per_task"]
