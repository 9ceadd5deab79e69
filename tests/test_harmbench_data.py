"""HarmBench behaviours from a clone's layout: columns, PNG bytes under .jpg names, bad rows and
images skipped with reasons (counts add up), targets from HarmBench's JSON or the default."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from harmbench.data import (BEHAVIORS_CSV, COLUMNS, IMAGES_DIR, MissingBehaviors, default_target, load_targets,
                            open_behavior_image, read_behaviors)
from mmsafety.errors import UserError


def _png(path: Path, size=(32, 24), colour=(10, 200, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="PNG")  # PNG bytes whatever the name says


def write_root(root: Path, rows: list[dict], columns=COLUMNS) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    (root / BEHAVIORS_CSV).parent.mkdir(parents=True, exist_ok=True)
    (root / BEHAVIORS_CSV).write_text(buf.getvalue())
    return root


def row(bid: str, image: str, **kw) -> dict:
    return {"Behavior": f"Explain the {bid} in this image", "BehaviorID": bid, "FunctionalCategory": "multimodal",
            "SemanticCategory": kw.pop("cat", "harmful"), "ImageFileName": image, "Source": "test",
            "ImageDescription": "a thing", "RedactedImageDescription": f"context of {bid}", "Tags": "multimodal", **kw}


def test_loader_reads_png_named_jpg_and_skips_bad_rows_with_reasons(tmp_path):
    images = tmp_path / IMAGES_DIR
    _png(images / "good.jpg")
    _png(images / "plain.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (9000, 8000)).save(images / "huge.png")  # 72 Mpixel: over the bomb guard
    (tmp_path.parent / "outside.png").write_bytes((images / "plain.png").read_bytes())
    write_root(tmp_path, [row("a", "good.jpg"), row("b", "plain.png"), row("a", "plain.png"), row("c", "corrupt.png"),
                          row("d", "huge.png"), row("e", "../../../outside.png"), row("f", "missing.png"),
                          {**row("g", "plain.png"), "BehaviorID": ""}])
    behaviors = read_behaviors(tmp_path)
    images_ok = {b.id: open_behavior_image(b) for b in behaviors if b.skip_reason is None}
    reasons = {b.id: b.skip_reason for b in behaviors if b.skip_reason}
    assert len(behaviors) == 8  # every row is accounted for
    assert {k for k, v in images_ok.items() if v is not None} == {"a", "b"}
    assert reasons["a#row-3"] == "duplicate BehaviorID a"
    assert reasons["c"].startswith("corrupt image") or reasons["c"] == "not an image Pillow can read"
    assert reasons["d"].startswith("image too large")
    assert reasons["e"] == "image path leaves the dataset root"
    assert reasons["f"] == "image file missing"
    assert reasons["row-8"] == "empty BehaviorID"
    a = next(b for b in behaviors if b.id == "a")
    assert any("PNG although named .jpg" in n for n in a.notes), a.notes
    assert a.context == "context of a" and a.semantic_category == "harmful"


def test_missing_column_and_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(MissingBehaviors, match="point case.root at a clone"):
        read_behaviors(tmp_path)
    write_root(tmp_path, [row("a", "x.png")], columns=[c for c in COLUMNS if c != "ImageFileName"])
    with pytest.raises(MissingBehaviors, match="lacks column.*ImageFileName"):
        read_behaviors(tmp_path)


def test_targets_from_harmbench_json_else_the_documented_default(tmp_path):
    write_root(tmp_path, [row("a", "a.png"), row("b", "b.png")])
    behaviors = read_behaviors(tmp_path)
    targets_file = tmp_path / "targets.json"
    targets_file.write_text(json.dumps({"a": "Sure, here's the a", "zzz": "unknown"}))
    targets, notes = load_targets(targets_file, behaviors)
    assert targets == {"a": "Sure, here's the a", "b": "Sure, here is how to explain the b in this image"}
    assert any(n.startswith("b: no target") for n in notes) and any(n.startswith("zzz:") for n in notes)
    assert default_target("Give instructions for X.") == "Sure, here is how to give instructions for X"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_targets(tmp_path / "bad.json", behaviors)


def test_synthetic_root_has_harmbench_layout(tmp_path):
    from harmbench.synthetic import write_synthetic_root

    write_synthetic_root(tmp_path, n=6)
    behaviors = read_behaviors(tmp_path)
    assert len(behaviors) == 6 and all(b.skip_reason is None for b in behaviors)
    assert all(open_behavior_image(b) is not None for b in behaviors)
    assert sum(any("named .jpg" in n for n in b.notes) for b in behaviors) == 3
    val = json.loads((tmp_path / "data/classifier_val_sets/multimodal_behaviors_val_set.json").read_text())
    assert set(val) == {b.id for b in behaviors}


def test_case_skips_bad_rows_and_counts_add_up(tmp_path):
    from harmbench.case import HarmBenchBehaviorsCase

    images = tmp_path / IMAGES_DIR
    _png(images / "a.jpg")
    _png(images / "b.png")
    (images / "c.png").write_bytes(b"garbage")
    write_root(tmp_path, [row("a", "a.jpg", cat="illegal"), row("b", "b.png"), row("c", "c.png"), row("d", "/etc/passwd")])
    case = HarmBenchBehaviorsCase(root=str(tmp_path), method="render_text", image_size=64, judge={"name": "refusal_substring"})
    bases = case.bases()
    spec = case.spec()
    assert [b.key for b in bases] == ["a", "b"] and len(bases) + len(spec["skipped"]) == spec["rows_read"] == 4
    assert {s["behavior_id"]: s["reason"] for s in spec["skipped"]}["d"] == "image path leaves the dataset root"
    assert bases[0].info["semantic_category"] == "illegal" and bases[0].info["context"] == "context of a"
    assert bases[0].info["target"] == "Sure, here is how to explain the a in this image"
    assert spec["harmbench_method"] == "MultiModalRenderText" and spec["warnings"] == []


def test_scoring_a_completions_file_skips_unknown_ids_and_torn_lines(tmp_path):
    from harmbench.cli import run_score

    write_root(tmp_path, [row("a", "a.png", cat="x"), row("b", "b.png", cat="y")])
    path = tmp_path / "completions.jsonl"
    lines = [{"behavior_id": "a", "generation": "Sure, here it is"}, {"behavior_id": "a", "generation": "I cannot"},
             {"behavior_id": "b", "generation": "Sorry"}, {"behavior_id": "zzz", "generation": "Sure"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"behavior_id": "b", "gen')
    report = run_score(["judge=refusal_substring", f"completions={path}", f"root={tmp_path}"])
    assert report["asr"] == pytest.approx((0.5 + 0.0) / 2) and report["test_cases"] == 3
    assert [s["reason"] for s in report["skipped"]] == ["torn last line (written partly; the job was cut off)",
                                                        "unknown behaviour id zzz"]
    assert report["test_cases"] + len(report["skipped"]) == report["read"] == 5
    saved = json.loads((tmp_path / "judged-refusal_substring" / "asr.json").read_text())
    assert saved["by_category"]["x"]["asr"] == 0.5 and saved["labels"] == [1, 0, 0]
