"""Load GOAT-Bench data: `<root>/<task>/test.jsonl` (or a `.json` array) plus images.

Field aliases follow the official code: text in `text` or `org_sent`; image in `img` or
`image`; id in `id`, else the image path with `.png` stripped; label 0/1 in `label`.
A line that cannot become a sample becomes a *skipped* sample with its reason, so counts
always add up to the lines read. Image paths may not leave the dataset root.

Images the task folder does not hold are looked up under `image_root` (`task.image_root`): the
release ships hatefulness as text only, its images are Facebook's Hateful Memes (`img/<id>.png`
in the folder that holds `img/`). A path may not leave the root it is found under either.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from mmsafety.errors import UserError
from mmsafety.images import ImageRejected, load_image
from mmsafety.safe_json import JSONRejected, loads


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
            data = loads(path.read_bytes().decode("utf-8", "replace"))
        except JSONRejected as e:
            raise UserError(f"{path}: {e}; fix or re-extract the file") from None
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
                rec = loads(line)
            except JSONRejected as e:  # not JSON, nested too deep, a number too long: the line is skipped
                yield i, None, f"line is {str(e).split(' (')[0]}", notes  # a position within one line adds nothing
                continue
            yield i, rec if isinstance(rec, dict) else None, None if isinstance(rec, dict) else "line is not a JSON object", notes


def _inside(root: Path, rel: str) -> Path | None:
    """The resolved image path if it stays inside root (no '..', absolute paths or symlinks out)."""
    candidate = (root / rel).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def _label(value) -> int | None:
    """0 or 1 from 0, 1, 0.0, 1.0, "0" or "1"; None for anything else (true/false included: a
    boolean is not the dataset's encoding, and taking it as 1/0 would hide a broken file)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def _caption(rec: dict):
    return rec["text"] if "text" in rec else rec.get("org_sent", "")


def _field_problem(rec: dict) -> str | None:
    """Why a record's id, caption or image field cannot be used as it is, or None. Refused rather
    than converted: str() of a list id or of a null caption ("None" inside the prompt) would
    score a different item than the file holds."""
    sid = rec.get("id")
    if sid is not None and (isinstance(sid, bool) or not isinstance(sid, (str, int))):
        return f"id {_short(sid)} is not a string or an integer"
    caption = _caption(rec)
    if not isinstance(caption, str):
        field_name = "text" if "text" in rec else "org_sent"
        return f"caption ({field_name}) {_short(caption)} is not a string"
    for key in ("img", "image"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            return f"image path ({key}) {_short(rec[key])} is not a string"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


NO_IMAGE = "image not found: "  # how every missing-image skip reason starts


def missing_image_reason(name: str, task_root: Path, image_root: Path | None) -> str:
    """Why a meme is skipped when its image is in neither folder, naming the fix."""
    if image_root is not None:
        return (f"{NO_IMAGE}{name} is neither under {task_root} nor under task.image_root={image_root}; "
                f"task.image_root must be the folder that holds the file paths the task file names (e.g. img/)")
    return (f"{NO_IMAGE}{name} is not under {task_root}; if the images live elsewhere (GOAT-Bench's hatefulness "
            f"images are Facebook's Hateful Memes), set task.image_root=DIR, the folder that holds img/")


def _image_path(name: str, task_root: Path, image_root: Path | None) -> tuple[Path | None, str | None]:
    """(resolved image path, None) or (None, skip reason): the file under the task folder if it is
    there, else under `image_root`. A path that reaches a file outside the root it names (`..`, an
    absolute path, a symlink out) is refused, never followed to the other root."""
    roots = [task_root] + ([image_root] if image_root is not None else [])
    for root in roots:
        if (root / name).exists():
            inside = _inside(root, name)
            if inside is None:
                return None, "image path leaves the dataset root"
            if inside.is_file():
                return inside, None
    if all(_inside(root, name) is None for root in roots):
        return None, "image path leaves the dataset root"
    return None, missing_image_reason(name, task_root, image_root)


def load_task(root: str | Path, task: str, image_root: str | Path | None = None) -> list[MemeSample]:
    """All samples of one task; problems become skipped samples with a reason. `image_root`: where
    images the task folder does not hold are looked up (task.image_root)."""
    root = Path(root)
    image_root = Path(image_root).expanduser() if image_root else None
    path = dataset_file(root, task)
    task_root = path.parent
    samples: list[MemeSample] = []
    seen: set[str] = set()
    for line_no, rec, problem, notes in _records(path):
        if rec is None:
            samples.append(MemeSample(task, f"line-{line_no}", skip_reason=problem, notes=notes))
            continue
        refused = _field_problem(rec)
        if refused:
            samples.append(MemeSample(task, f"line-{line_no}", skip_reason=refused, notes=notes))
            continue
        image_name = rec.get("img") or rec.get("image")
        # As the official loader: the image path with ".png" stripped (a .jpg keeps its name, a folder stays in it).
        sid = str(rec.get("id") if rec.get("id") is not None else (str(image_name).replace(".png", "") if image_name else f"line-{line_no}"))
        sample = MemeSample(task, sid, text=_caption(rec), notes=notes)
        sample.label = _label(rec.get("label"))
        if sid in seen:
            sample.id = f"{sid}#line-{line_no}"
            sample.skip_reason = f"duplicate id {sid}"
        elif sample.label is None:
            kind = " (a boolean)" if isinstance(rec.get("label"), bool) else ""
            sample.skip_reason = f"label {_short(rec.get('label'))}{kind} is not 0 or 1"
        elif not image_name:
            sample.skip_reason = "no image field (img or image)"
        else:
            sample.image_path, sample.skip_reason = _image_path(str(image_name), task_root, image_root)
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
