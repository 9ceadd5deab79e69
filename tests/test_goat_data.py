"""GOAT-Bench loading: the official field aliases, skip reasons, and paths that cannot leave the root."""

from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

import goat_bench.data
from goat_bench.data import MissingDataset, load_task, open_image, with_images


def write(root, lines, task="hatefulness", raw=False):
    (root / task / "img").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / task / "img" / "a.png")
    body = b"".join(line if raw and isinstance(line, bytes) else (json.dumps(line) + "\n").encode() for line in lines)
    (root / task / "test.jsonl").write_bytes(body)
    return root


def test_field_aliases(tmp_path):
    root = write(tmp_path, [{"id": 1, "img": "img/a.png", "text": "hello", "label": 1},
                            {"image": "img/a.png", "org_sent": "from org_sent", "label": "0"}])
    a, b = load_task(root, "hatefulness")
    assert (a.id, a.text, a.label, a.skip_reason) == ("1", "hello", 1, None)
    assert (b.id, b.text, b.label) == ("img/a", "from org_sent", 0)  # id falls back to the path without .png
    assert open_image(a).size == (8, 8)


def test_id_fallback_strips_png_from_the_image_path_as_the_official_loader(tmp_path):
    root = write(tmp_path, [{"img": "img/a.png", "label": 1}, {"img": "b.jpg", "label": 0}, {"img": "c.png", "label": 0}])
    assert [s.id for s in load_task(root, "hatefulness")] == ["img/a", "b.jpg", "c"]


def test_json_array_file(tmp_path):
    (tmp_path / "misogyny" / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "misogyny" / "img" / "a.png")
    (tmp_path / "misogyny" / "test.json").write_text(json.dumps([{"id": "x", "img": "img/a.png", "text": "t", "label": 0}]))
    assert [s.id for s in load_task(tmp_path, "misogyny")] == ["x"]


def test_bad_lines_become_skipped_samples(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    root = tmp_path / "data"
    write(root, [{"id": "ok", "img": "img/a.png", "text": "t", "label": 1}])
    os.symlink(outside, root / "hatefulness" / "img" / "link.png")
    lines = [
        b'{"id": "ok", "img": "img/a.png", "text": "t", "label": 1}\n',
        b"this is not json\n",
        b'{"id": "ok", "img": "img/a.png", "text": "dup", "label": 0}\n',
        b'{"id": "lbl", "img": "img/a.png", "text": "t", "label": 2}\n',
        b'{"id": "noimg", "text": "t", "label": 1}\n',
        b'{"id": "up", "img": "../../secret.png", "text": "t", "label": 1}\n',
        b'{"id": "abs", "img": "' + str(outside).encode() + b'", "text": "t", "label": 1}\n',
        b'{"id": "sym", "img": "img/link.png", "text": "t", "label": 1}\n',
        b'{"id": "latin1", "img": "img/a.png", "text": "caf\xe9", "label": 0}\n',
        b'[1, 2]\n',
    ]
    (root / "hatefulness" / "test.jsonl").write_bytes(b"".join(lines))
    samples = load_task(root, "hatefulness")
    assert len(samples) == len(lines)  # every line is accounted for
    reasons = {s.id: s.skip_reason for s in samples}
    assert reasons["ok"] is None and reasons["latin1"] is None
    assert reasons["line-2"] == "line is not valid JSON"
    assert reasons["ok#line-3"] == "duplicate id ok"
    assert reasons["lbl"] == "label 2 is not 0 or 1"
    assert reasons["noimg"] == "no image field (img or image)"
    assert reasons["up"] == reasons["abs"] == reasons["sym"] == "image path leaves the dataset root"
    assert reasons["line-10"] == "line is not a JSON object"
    latin = next(s for s in samples if s.id == "latin1")
    assert "\ufffd" in latin.text and any("UTF-8" in n for n in latin.notes)


def test_missing_dataset_names_layout_and_source(tmp_path):
    with pytest.raises(MissingDataset) as err:
        load_task(tmp_path, "sarcasm")
    msg = str(err.value)
    assert "\n" not in msg and "sarcasm/test.jsonl" in msg and "HKBU-NLP/GOAT-Bench" in msg


def mixed_dataset(root, n=30):
    """n memes: most fine, every 7th a corrupt file, every 11th missing, one bad line."""
    (root / "sarcasm" / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        path = root / "sarcasm" / "img" / f"{i}.png"
        if i % 7 == 3:
            path.write_bytes(b"\x89PNG not really")
        elif i % 11 != 5:
            Image.new("RGB", (20 + i, 10 + i), (i * 8, 100, 200)).save(path)
        lines.append(json.dumps({"id": i, "img": f"img/{i}.png", "text": f"meme {i}", "label": i % 2}))
    lines.insert(4, "{not json")
    (root / "sarcasm" / "test.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("workers", [1, 3])
def test_images_loaded_ahead_equal_images_loaded_in_order(tmp_path, workers):
    root = mixed_dataset(tmp_path)
    serial = [(s.id, s.skip_reason, s.notes, None if im is None else im.tobytes())
              for s, im in with_images(load_task(root, "sarcasm"), workers=0)]
    ahead = [(s.id, s.skip_reason, s.notes, None if im is None else im.tobytes())
             for s, im in with_images(load_task(root, "sarcasm"), workers=workers, ahead=4)]
    assert ahead == serial
    assert sum(im is None for *_, im in serial) == 4 + 3 + 1  # corrupt (3, 10, 17, 24), missing, the bad line


def test_images_are_loaded_at_most_a_window_ahead(tmp_path, monkeypatch):
    root = mixed_dataset(tmp_path)
    opened = []
    real_open = goat_bench.data.open_image
    monkeypatch.setattr(goat_bench.data, "open_image", lambda s: (opened.append(s.id), real_open(s))[1])
    samples = [s for s in load_task(root, "sarcasm") if s.skip_reason is None]
    loader = with_images(samples, workers=2, ahead=5)
    next(loader)
    next(loader)
    deadline = time.time() + 10
    while len(opened) < 7 and time.time() < deadline:  # the threads catch up with what they were given
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(opened) == 2 + 5  # the two consumed and a window of five behind them, no more
    loader.close()
    assert len(opened) == 7
