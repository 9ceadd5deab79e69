"""Hostile inputs, killed and concurrent runs, full or unwritable disks, reproducibility.

The corpus is generated here (no committed binaries). Every check counts samples: none may be
lost or duplicated.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from goat_bench.data import load_task
from mmsafety.images import MAX_PIXELS, ImageRejected, load_image
from mmsafety.records import read_samples

EVAL = [sys.executable, "-c", "from goat_bench.cli import main; main()"]
ATTACK = [sys.executable, "-c", "from visual_attacks.cli import main; main()"]


def run(cmd, *overrides, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *overrides], capture_output=True, text=True, timeout=timeout)


# -- the hostile corpus -------------------------------------------------------------------

def _png(path: Path, image: Image.Image, **kw) -> None:
    image.save(path, **kw)


def hostile_dataset(tmp: Path) -> tuple[Path, dict[str, str | None], Path]:
    """A GOAT-Bench task folder with every kind of bad input. Returns the root, the expected
    outcome per sample id (None: loads; else a phrase of the skip reason), and a file outside."""
    root, task = tmp / "data", "hatefulness"
    img = root / task / "img"
    img.mkdir(parents=True)
    outside = tmp / "outside.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(outside)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    noise.save(img / "valid.png")
    noise.save(img / "valid.jpg", quality=90)
    (img / "zero.png").write_bytes(b"")
    (img / "cut.png").write_bytes((img / "valid.png").read_bytes()[:300])
    (img / "cut.jpg").write_bytes((img / "valid.jpg").read_bytes()[:400])
    (img / "garbage.png").write_bytes(b"\x00not an image at all\xff" * 20)
    Image.new("CMYK", (20, 20), (0, 200, 200, 0)).save(img / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 60000, 256, dtype=np.uint16).reshape(16, 16)).save(img / "gray16.png")
    palette = Image.new("RGB", (12, 12), (0, 0, 255)).convert("P")
    palette.save(img / "palette.png", transparency=0)
    Image.new("RGBA", (12, 12), (0, 255, 0, 100)).save(img / "rgba.png")
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(img / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(img / "anim.webp", save_all=True, append_images=frames[1:])
    side = int(MAX_PIXELS ** 0.5) + 100
    Image.new("1", (side, side)).save(img / "bomb.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(img / "one.png")
    Image.new("RGB", (3000, 3), (50, 60, 70)).save(img / "wide.png")
    os.symlink(outside, img / "link.png")

    expected: dict[str, str | None] = {}
    lines: list[bytes] = []

    def add(sid: str, outcome: str | None, image: str | None = "img/valid.png", label=1, raw: bytes | None = None):
        # A repeated id is recorded under "<id>#line-<n>".
        expected[f"{sid}#line-{len(lines) + 1}" if sid in expected else sid] = outcome
        if raw is not None:
            lines.append(raw)
            return
        rec = {"id": sid, "text": f"caption of {sid}", "label": label}
        if image is not None:
            rec["img"] = image
        lines.append((json.dumps(rec) + "\n").encode())

    add("valid", None)
    add("valid-jpg", None, "img/valid.jpg", label=0)
    add("zero-byte", "not an image", "img/zero.png")
    add("truncated-png", "corrupt", "img/cut.png")
    add("truncated-jpg", "corrupt", "img/cut.jpg")
    add("garbage", "not an image", "img/garbage.png")
    add("cmyk", None, "img/cmyk.jpg")
    add("gray16", None, "img/gray16.png")
    add("palette-transparent", None, "img/palette.png")
    add("rgba", None, "img/rgba.png")
    add("animated-gif", None, "img/anim.gif")
    add("animated-webp", None, "img/anim.webp")
    add("bomb", "too large", "img/bomb.png")
    add("one-pixel", None, "img/one.png")
    add("extreme-aspect", None, "img/wide.png")
    add("missing-file", "image not found", "img/nope.png")
    add("dotdot", "leaves the dataset root", "../../outside.png")
    add("absolute", "leaves the dataset root", str(outside))
    add("symlink-out", "leaves the dataset root", "img/link.png")
    add("label-2", "not 0 or 1", label=2)
    add("label-text", "not 0 or 1", label="yes")
    add("no-image", "no image field", image=None)
    add("valid", "duplicate id")  # second line with the same id
    add("non-utf8", None, raw=b'{"id": "non-utf8", "img": "img/valid.png", "text": "caf\xe9 \xff", "label": 0}\n')
    add("line-25", "not valid JSON", raw=b"{this is not json\n")
    add("line-26", "not a JSON object", raw=b'["a list", 1]\n')
    (root / task / "test.jsonl").write_bytes(b"".join(lines))
    return root, expected, outside


def test_hostile_corpus_run_completes_and_accounts_for_every_line(tmp_path, organism):
    root, expected, outside = hostile_dataset(tmp_path)
    out = tmp_path / "run"
    proc = run(EVAL, "task=goat_hatefulness", f"task.root={root}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "record.json").read_text())
    samples = read_samples(out / "samples.jsonl")
    assert record["status"] == "completed"
    assert record["counts"]["ok"] + record["counts"]["skipped"] == len(expected) == len(samples) == 26
    by_id = {s["id"]: s for s in samples}
    assert set(by_id) == set(expected)
    for sid, outcome in expected.items():
        s = by_id[sid]
        if outcome is None:
            assert s["status"] == "ok", (sid, s)
        else:
            assert s["status"] == "skipped" and outcome in s["reason"], (sid, s)
    # Nothing outside the root was loaded: all three routes to it are skipped, not scored.
    assert all(by_id[sid]["status"] == "skipped" for sid in ("dotdot", "absolute", "symlink-out"))
    assert any("UTF-8" in n for n in by_id["non-utf8"]["notes"])
    assert sum(record["skipped_reasons"].values()) == record["counts"]["skipped"]


# -- property-based fuzzing ---------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["id", "img", "image", "text", "org_sent", "label", "x"]),
        st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=12), st.booleans(), st.floats(allow_nan=True)),
        max_size=6)),
), max_size=12))
def test_fuzzed_jsonl_never_crashes_and_accounts_for_every_line(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "sarcasm").mkdir()
    body = b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines) + b"\n"
    (root / "sarcasm" / "test.jsonl").write_bytes(body)
    samples = load_task(root, "sarcasm")
    non_blank = [raw for raw in body.split(b"\n") if raw.decode("utf-8", "replace").strip()]
    assert len(samples) == len(non_blank)
    for s in samples:
        assert s.skip_reason is not None or (s.image_path is not None and s.image_path.is_relative_to(root.resolve()))


def test_tiff_with_a_bad_second_frame_is_refused_not_raised(tmp_path):
    """Found by the fuzz test below in CI: counting a TIFF's frames parses every IFD, and one
    without an ImageWidth tag raised TypeError("Missing dimensions") out of load_image."""
    path = tmp_path / "two_frames.tiff"
    Image.new("RGB", (9, 7), (10, 200, 30)).save(path, save_all=True, append_images=[Image.new("RGB", (9, 7))])
    raw = bytearray(path.read_bytes())
    first = struct.unpack("<I", raw[4:8])[0]
    entries = struct.unpack("<H", raw[first:first + 2])[0]
    second = struct.unpack("<I", raw[first + 2 + 12 * entries:first + 6 + 12 * entries])[0]
    for i in range(struct.unpack("<H", raw[second:second + 2])[0]):
        entry = second + 2 + 12 * i
        if struct.unpack("<H", raw[entry:entry + 2])[0] == 256:  # ImageWidth -> an unknown tag
            raw[entry:entry + 2] = struct.pack("<H", 0xFFF0)
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageRejected, match="corrupt image \\(TypeError: Missing dimensions\\)"):
        load_image(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_image_bytes_load_or_are_refused(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("img")
    fmt = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]))
    buf = folder / f"x.{fmt.lower()}"
    Image.new("RGB", (9, 7), (10, 200, 30)).save(buf, format=fmt)
    raw = bytearray(buf.read_bytes())
    for _ in range(data.draw(st.integers(0, 8))):  # flip, cut or splice bytes
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            raw = raw[:at]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    buf.write_bytes(bytes(raw))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's complaints must become notes, not console noise
            loaded = load_image(buf)
    except ImageRejected as e:
        assert str(e)  # a reason to record
        return
    assert loaded.image.mode == "RGB" and min(loaded.image.size) >= 1


# -- killed, concurrent and reproducible runs ---------------------------------------------

ATTACK_ARGS = ["attack.steps=40", "images=4", "heldout_prompts=6", "attack.eps=32/255"]


def without_timing(samples: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "attack_seconds"} for s in sorted(samples, key=lambda s: s["image"])]


@pytest.fixture(scope="module")
def attack_reference(tmp_path_factory, organism):
    out = tmp_path_factory.mktemp("ref") / "attack"
    proc = run(ATTACK, *ATTACK_ARGS, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, "the job ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_attack_resumes_to_the_uninterrupted_result(tmp_path, attack_reference):
    out = tmp_path / "attack"
    rng = random.Random(7)
    samples_file = out / "samples.jsonl"
    # Kill 1: at a random moment once the job has started (model loading or PGD).
    proc = subprocess.Popen([*ATTACK, *ATTACK_ARGS, f"hydra.run.dir={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.time()
    delay = rng.uniform(1.0, 4.0)
    _kill_when(proc, lambda: (out / "record.json").exists() and time.time() - started > delay)
    assert json.loads((out / "record.json").read_text())["status"] == "partial"
    # Kill 2: while the saved images are being judged (some samples written, not all).
    proc = subprocess.Popen([*ATTACK, *ATTACK_ARGS, f"hydra.run.dir={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: len(read_samples(samples_file)) >= 1)
    partial = read_samples(samples_file)
    assert 1 <= len(partial) < 4, "the kill must land mid-judging"
    done = run(ATTACK, *ATTACK_ARGS, f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    samples = read_samples(samples_file)
    assert sorted(s["image"] for s in samples) == [0, 1, 2, 3]  # each image exactly once
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "completed" and record["timing"]["resumes"] == 2
    reference = read_samples(attack_reference / "samples.jsonl")
    assert without_timing(samples) == without_timing(reference)  # same PNG names (sha256), same judgements
    for name in ("record.json", "samples.jsonl", "loss_curve.csv"):
        assert not list(out.glob(f".{name}.*.tmp")), "no temporary file left behind"


def test_same_config_and_seed_give_byte_identical_outputs(tmp_path, attack_reference):
    again = tmp_path / "again"
    proc = run(ATTACK, *ATTACK_ARGS, f"hydra.run.dir={again}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = read_samples(attack_reference / "samples.jsonl"), read_samples(again / "samples.jsonl")
    assert without_timing(first) == without_timing(second)
    for s in first:
        assert (again / s["adversarial_png"]).read_bytes() == (attack_reference / s["adversarial_png"]).read_bytes()
    for name in ("a", "b"):
        assert run(EVAL, "task=goat_sarcasm", "task.limit=40", f"hydra.run.dir={tmp_path / name}").returncode == 0
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()


def test_concurrent_jobs_in_one_sweep_folder_while_the_leaderboard_reads(tmp_path, organism):
    from mmsafety.leaderboard import write_leaderboard

    sweep = tmp_path / "sweep"
    # The same job started twice into one folder is refused, not interleaved. The folder's lock is
    # held here, as a running job holds it: racing a real job made the check depend on whether the
    # job (0.5 s of scoring) outlived the twin's start-up.
    busy = tmp_path / "busy"
    busy.mkdir(parents=True)
    with open(busy / ".record.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        twin = run(EVAL, "task=goat_all", "batch_size=4", f"hydra.run.dir={busy}")
    assert not (busy / "samples.jsonl").exists()
    assert twin.returncode == 2 and "another job is writing" in twin.stderr
    # Batches of one keep each job writing samples for a few seconds while the leaderboard reads.
    # stderr goes to files: a pipe nobody reads until the end fills up with progress bars on a slow
    # machine, and the jobs block writing to it.
    logs = [open(tmp_path / f"{name}.stderr", "w+") for name in ("a", "b")]
    jobs = [subprocess.Popen([*EVAL, "task=goat_all", "batch_size=1", f"hydra.run.dir={sweep / name}"],
                             stdout=subprocess.DEVNULL, stderr=log, text=True) for name, log in zip(("a", "b"), logs)]
    reads = 0
    while any(j.poll() is None for j in jobs):
        summary = write_leaderboard([sweep], tmp_path / "board")  # must never trip over a half-written file
        assert not summary["problems"], summary["problems"]
        reads += 1
    assert all(j.returncode == 0 for j in jobs), [(log.seek(0), log.read()[-2000:])[1] for log in logs]
    for log in logs:
        log.close()
    write_leaderboard([sweep], tmp_path / "board")
    rows = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["goat_bench"]
    # Both jobs run the same config: one row, each sample once; 500 memes per folder.
    assert len(rows) == 1 and rows[0]["memes"] == 500 and rows[0]["status"] == "completed"
    for name in ("a", "b"):
        keys = [(s["task"], s["id"]) for s in read_samples(sweep / name / "samples.jsonl")]
        assert len(keys) == len(set(keys)) == 500
    assert reads >= 2


# -- unwritable and full disks ------------------------------------------------------------

def test_output_folder_under_a_file_fails_in_one_line_before_anything_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run(EVAL, f"hydra.run.dir={blocker / 'run'}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot create output folder {blocker / 'run'}: {blocker} is a file, not a folder; pass hydra.run.dir=A_FOLDER"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere; permissions cannot be tested")
def test_read_only_output_folder_fails_in_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = run(EVAL, f"hydra.run.dir={locked / 'run'}", timeout=120)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr
    assert not (locked / "run").exists()


def test_disk_full_mid_run_leaves_a_valid_failed_record(tmp_path, monkeypatch, organism):
    from goat_bench.cli import run_eval
    from mmsafety.app import describe_os_error
    from mmsafety.records import RunRecord

    real_add = RunRecord.add_sample
    written = []

    def add_until_full(self, sample):
        if len(written) == 30:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.samples_path))
        written.append(sample)
        real_add(self, sample)

    monkeypatch.setattr(RunRecord, "add_sample", add_until_full)
    out = tmp_path / "run"
    with pytest.raises(OSError) as err:
        run_eval(out, "task=goat_sarcasm", "batch_size=4")
    message = describe_os_error(err.value, out)
    assert "\n" not in message and "No space left on device" in message and "resume" in message
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "failed" and "No space left" in record["error"]
    assert record["counts"]["ok"] == len(read_samples(out / "samples.jsonl")) == 30
    monkeypatch.setattr(RunRecord, "add_sample", real_add)
    metrics, _ = run_eval(out, "task=goat_sarcasm", "batch_size=4")  # space freed: the same command resumes
    keys = [s["id"] for s in read_samples(out / "samples.jsonl")]
    assert len(keys) == len(set(keys)) == 100 and metrics["per_task"]["sarcasm"]["n"] == 100
