"""Load GOAT-Bench data: `<root>/<task>/test.jsonl` (or a `.json` array) plus images.

Field aliases follow the official code: text in `text` or `org_sent`; image in `img` or
`image`; id in `id`, else the image path with `.png` stripped; label 0/1 in `label`.
A line that cannot become a sample becomes a *skipped* sample with its reason, so counts
always add up to the lines read. Image paths may not leave the dataset root.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from mmsafety.errors import UserError
from mmsafety.images import ImageRejected, load_image


@dataclass
class MemeSample:
    task: str
    id: str
    text: str = ""
    label: int | None = None
    image_path: Path | None = None
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)


class MissingDataset(UserError):
    pass


def dataset_file(root: Path, task: str) -> Path:
    for name in ("test.jsonl", "test.json"):
        if (root / task / name).is_file():
            return root / task / name
    raise MissingDataset(
        f"no GOAT-Bench data for '{task}' under {root}: expected {root}/{task}/test.jsonl plus images; "
        f"get the per-task zips from the HKBU-NLP/GOAT-Bench dataset (test/) and unpack them there, "
        f"or drop task.root to use the synthetic sample")


def _records(path: Path) -> Iterator[tuple[int, dict | None, str | None, list[str]]]:
    """(line number, record or None, problem, notes) for each entry of a .jsonl or .json file."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8", "replace"))
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); fix or re-extract the file") from None
        for i, rec in enumerate(data if isinstance(data, list) else [], 1):
            yield i, rec if isinstance(rec, dict) else None, None if isinstance(rec, dict) else "entry is not an object", []
        return
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            notes = []
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "replace")
                notes.append("text was not UTF-8; decoded with replacement characters")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                yield i, None, "line is not valid JSON", notes
                continue
            yield i, rec if isinstance(rec, dict) else None, None if isinstance(rec, dict) else "line is not a JSON object", notes


def _inside(root: Path, rel: str) -> Path | None:
    """The resolved image path if it stays inside root (no '..', absolute paths or symlinks out)."""
    candidate = (root / rel).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def _label(value) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def load_task(root: str | Path, task: str) -> list[MemeSample]:
    """All samples of one task; problems become skipped samples with a reason."""
    root = Path(root)
    path = dataset_file(root, task)
    task_root = path.parent
    samples: list[MemeSample] = []
    seen: set[str] = set()
    for line_no, rec, problem, notes in _records(path):
        if rec is None:
            samples.append(MemeSample(task, f"line-{line_no}", skip_reason=problem, notes=notes))
            continue
        image_name = rec.get("img") or rec.get("image")
        # As the official loader: the image path with ".png" stripped (a .jpg keeps its name, a folder stays in it).
        sid = str(rec.get("id") if rec.get("id") is not None else (str(image_name).replace(".png", "") if image_name else f"line-{line_no}"))
        sample = MemeSample(task, sid, text=str(rec.get("text", rec.get("org_sent", "")) or ""), notes=notes)
        sample.label = _label(rec.get("label"))
        if sid in seen:
            sample.id = f"{sid}#line-{line_no}"
            sample.skip_reason = f"duplicate id {sid}"
        elif sample.label is None:
            sample.skip_reason = f"label {rec.get('label')!r} is not 0 or 1"
        elif not image_name:
            sample.skip_reason = "no image field (img or image)"
        else:
            sample.image_path = _inside(task_root, str(image_name))
            if sample.image_path is None:
                sample.skip_reason = "image path leaves the dataset root"
        seen.add(sid)
        samples.append(sample)
    return samples


def open_image(sample: MemeSample):
    """The sample's RGB image, or None with `sample.skip_reason` set."""
    try:
        loaded = load_image(sample.image_path)
    except ImageRejected as e:
        sample.skip_reason = str(e)
        return None
    sample.notes += loaded.notes
    return loaded.image


def with_images(samples: Iterable[MemeSample], workers: int = 0, ahead: int = 64) -> Iterator[tuple[MemeSample, object]]:
    """(sample, its image or None) in order. With `workers` > 0, images decode in that many
    threads, up to `ahead` samples in front of the consumer (Pillow releases the GIL while it
    decodes), so loading overlaps a GPU's forward instead of adding to it. The window bounds
    memory: decoded images are not piled up for a whole dataset."""
    def load(sample: MemeSample):
        return open_image(sample) if sample.skip_reason is None else None

    if workers <= 0:
        yield from ((s, load(s)) for s in samples)
        return
    pending = iter(samples)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmsafety-images") as pool:
        window = deque((s, pool.submit(load, s)) for s in islice(pending, ahead))
        try:
            while window:
                sample, image = window.popleft()
                for following in islice(pending, 1):
                    window.append((following, pool.submit(load, following)))
                yield sample, image.result()
        finally:
            for _, image in window:  # an interrupted run does not wait for images it will not use
                image.cancel()
