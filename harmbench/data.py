"""HarmBench's multimodal behaviours from a clone of the HarmBench repository.

Layout (as in centerforaisafety/HarmBench):
- `data/behavior_datasets/harmbench_behaviors_multimodal_all.csv`, columns Behavior, BehaviorID,
  FunctionalCategory, SemanticCategory, ImageFileName, Source, ImageDescription,
  RedactedImageDescription, Tags;
- `data/multimodal_behavior_images/<ImageFileName>`. Several real files are PNG bytes under a
  `.jpg` name: Pillow reads the bytes, not the name, so they load, and the sample's notes say so;
- optionally a targets file in HarmBench's JSON format, `{BehaviorID: "Sure, here's ..."}`.

A row that cannot become a behaviour becomes a *skipped* behaviour with its reason (missing
field, duplicate id, image missing, corrupt, too large, or outside the root), so counts always
add up to the rows read.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mmsafety.errors import UserError
from mmsafety.images import ImageRejected, load_image

BEHAVIORS_CSV = Path("data/behavior_datasets/harmbench_behaviors_multimodal_all.csv")
IMAGES_DIR = Path("data/multimodal_behavior_images")
TARGETS_JSON = Path("data/optimizer_targets/harmbench_targets_multimodal.json")
VAL_SET_JSON = Path("data/classifier_val_sets/multimodal_behaviors_val_set.json")
COLUMNS = ("Behavior", "BehaviorID", "FunctionalCategory", "SemanticCategory", "ImageFileName", "Source",
           "ImageDescription", "RedactedImageDescription", "Tags")
# Fields a behaviour cannot do without; the others may be empty.
REQUIRED = ("Behavior", "BehaviorID", "ImageFileName")
# The documented default when no targets file gives one: HarmBench's targets are affirmative
# openings of this shape ("Sure, here's how to ..."); the behaviour is the request itself.
DEFAULT_TARGET = "Sure, here is how to {request}"


class MissingBehaviors(UserError):
    pass


@dataclass
class Behavior:
    id: str
    behavior: str = ""
    functional_category: str = ""
    semantic_category: str = ""
    image_file: str = ""
    image_description: str = ""
    redacted_image_description: str = ""
    tags: list[str] = field(default_factory=list)
    row: int = 0
    image_path: Path | None = None
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def context(self) -> str:
        """What the HarmBench classifier sees instead of the image (it never sees pixels)."""
        return self.redacted_image_description


def default_target(behavior: str) -> str:
    """"Sure, here is how to <the request, first letter lower-cased, without a final full stop>"."""
    request = behavior.strip().rstrip(".")
    return DEFAULT_TARGET.format(request=request[:1].lower() + request[1:])


def _inside(root: Path, rel: str) -> Path | None:
    candidate = (root / rel).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def behaviors_csv(root: str | Path) -> Path:
    path = Path(root).expanduser() / BEHAVIORS_CSV
    if not path.is_file():
        raise MissingBehaviors(f"no HarmBench behaviours at {path}: point case.root at a clone of "
                               f"centerforaisafety/HarmBench, or drop case.root for the synthetic behaviours")
    return path


def read_behaviors(root: str | Path) -> list[Behavior]:
    """Every row of the behaviours CSV under `root`, problems as skipped behaviours (no images opened)."""
    root = Path(root).expanduser()
    path = behaviors_csv(root)
    text = path.read_bytes().decode("utf-8-sig", "replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise MissingBehaviors(f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(reader.fieldnames or [])}); "
                               f"use HarmBench's harmbench_behaviors_multimodal_all.csv")
    behaviors, seen = [], set()
    for i, row in enumerate(reader, 1):
        get = lambda k: (row.get(k) or "").strip()  # noqa: E731
        b = Behavior(id=get("BehaviorID") or f"row-{i}", behavior=get("Behavior"), functional_category=get("FunctionalCategory"),
                     semantic_category=get("SemanticCategory") or "unknown", image_file=get("ImageFileName"),
                     image_description=get("ImageDescription"), redacted_image_description=get("RedactedImageDescription"),
                     tags=[t.strip() for t in get("Tags").split(",") if t.strip()], row=i)
        empty = [k for k in REQUIRED if not get(k)]
        if None in row:  # csv puts surplus cells under the key None
            b.skip_reason = f"row has {len(row[None])} cell(s) more than the header"
        elif empty:
            b.skip_reason = f"empty {', '.join(empty)}"
        elif b.id in seen:
            b.id, b.skip_reason = f"{b.id}#row-{i}", f"duplicate BehaviorID {b.id}"
        else:
            b.image_path = _inside(root / IMAGES_DIR, b.image_file)
            if b.image_path is None:
                b.skip_reason = "image path leaves the dataset root"
        seen.add(b.id)
        behaviors.append(b)
    return behaviors


def open_behavior_image(b: Behavior) -> Image.Image | None:
    """The behaviour's RGB image, or None with `b.skip_reason` set. Notes when the bytes are not
    the format the file name says (HarmBench ships PNGs named .jpg)."""
    try:
        loaded = load_image(b.image_path)
    except ImageRejected as e:
        b.skip_reason = str(e)
        return None
    with Image.open(b.image_path) as im:
        actual = (im.format or "").lower()
    named = b.image_path.suffix.lower().lstrip(".").replace("jpg", "jpeg")
    if actual and named and actual != named:
        b.notes.append(f"file is {actual.upper()} although named .{b.image_path.suffix.lstrip('.')}; read as {actual.upper()}")
    b.notes += loaded.notes
    return loaded.image


def load_targets(path: str | Path | None, behaviors: list[Behavior]) -> tuple[dict[str, str], list[str]]:
    """Per-behaviour target strings: from a HarmBench-format targets JSON where it has one, else
    `default_target`. Returns (targets by id, notes: ids the file lacks, entries that are not strings)."""
    given: dict = {}
    notes = []
    if path is not None:
        path = Path(path).expanduser()
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"case.targets={path}: no such file; give HarmBench's targets JSON or drop case.targets") from None
        except ValueError as e:
            raise UserError(f"case.targets={path}: not valid JSON ({e}); fix the file or drop case.targets") from None
        if not isinstance(given, dict):
            raise UserError(f"case.targets={path}: expected an object {{BehaviorID: target}}")
    targets = {}
    for b in behaviors:
        value = given.get(b.id)
        if isinstance(value, list) and value and isinstance(value[0], str):
            value = value[0]  # some HarmBench target files hold a list per behaviour
        if isinstance(value, str) and value.strip():
            targets[b.id] = value
        else:
            if path is not None:
                notes.append(f"{b.id}: no target in {path.name}; default used")
            targets[b.id] = default_target(b.behavior)
    unknown = sorted(set(given) - {b.id for b in behaviors}) if path is not None else []
    notes += [f"{k}: target for an unknown behaviour id; ignored" for k in unknown]
    return targets, notes


def skip_counts(behaviors: list[Behavior]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for b in behaviors:
        if b.skip_reason:
            counts[b.skip_reason] = counts.get(b.skip_reason, 0) + 1
    return counts
