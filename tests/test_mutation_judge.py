"""The judge stage (visual_attacks/judge.py) without a model: a hand-made attack run folder, a case that
records what it is shown, and Pillow as the reference for what a deploy transform sends. Written for
`make mutation` (its `targets_judges` group runs no slow test, and every other judge-stage test needs the
organism): each test asserts behaviour a wrong judge stage would change."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsafety.attack_case import Judgement
from mmsafety.errors import UserError
from visual_attacks import judge as judge_stage
from visual_attacks.deploy import PNG, build_deploy
from visual_attacks.png_names import png_name

JPEG_75 = {"name": "jpeg_75", "steps": [{"kind": "jpeg", "quality": 75}]}


def _image(seed: int, size=(12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _save(folder: Path, image: Image.Image, index: int, role: str) -> str:
    data = _png_bytes(image)
    name = f"images/{png_name(data, index, role)}"
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return name


def _source_run(folder: Path, n: int = 2, extra_samples=()) -> tuple[Path, list[tuple[Image.Image, Image.Image]]]:
    """An attack run folder as mmsafety-attack writes one: record.json of kind visual_attack with a case
    config, and `n` crafted samples whose PNGs are named by their sha256."""
    folder.mkdir(parents=True)
    pairs, lines = [], []
    for i in range(n):
        clean, adv = _image(2 * i), _image(2 * i + 1)
        pairs.append((clean, adv))
        lines.append({"image": i, "key": f"k{i}", "status": "ok", "clean_png": _save(folder, clean, i, "clean"),
                      "adversarial_png": _save(folder, adv, i, "adversarial"), "best_loss": 0.5 + i,
                      "steps_run": 3 + i, "steps_budget": 10, "attack_won": "pgd", "attack_seconds": 1.0 + i,
                      "base": {"task": f"t{i % 2}"}})
    lines += list(extra_samples)
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines))
    (folder / "record.json").write_text(json.dumps({
        "kind": "visual_attack", "config": {"case": {"name": "recording_case"}},
        "spec": {"case": "recording_case", "notes": "not carried", "group_by": ["task"]},
        "model": {"name": "crafter", "id": "crafter/id"}}))
    return folder, pairs


class RecordingCase:
    """Judges an image by its mean pixel value (so the rates tell which pixels it was given) and keeps
    every image it was shown."""

    judge_needs = frozenset()
    group_by = ("task",)

    def __init__(self):
        self.shown: list[tuple[np.ndarray, str]] = []
        self.adapters, self.infos = [], []

    def judge(self, adapter, image, base):
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        self.shown.append((pixels, base.key))
        self.adapters.append(adapter)
        self.infos.append(base.info)
        return Judgement({"mean": float(pixels.mean() / 255)}, [{"key": base.key, "mean": float(pixels.mean())}])

    def utility(self, clean, adversarial, base):
        self.infos.append(base.info)
        return {"kept": 1.0 - abs(clean.rates["mean"] - adversarial.rates["mean"])}


class FakeAdapter:
    name, model_id, weights_sha256 = "fake", "fake/model", "abc123"


class GeneratingAdapter(FakeAdapter):
    capabilities = frozenset({"generate"})


@pytest.fixture
def case(monkeypatch):
    built = RecordingCase()
    seen_cfgs = []

    def build_case(cfg):
        seen_cfgs.append(cfg)
        return built

    monkeypatch.setattr(judge_stage, "build_case", build_case)
    built.cfgs = seen_cfgs
    return built


def _pillow_jpeg(image: Image.Image, quality: int) -> np.ndarray:
    """What a JPEG upload at `quality` decodes to: Pillow's own round trip (4:2:0, its default)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64)


def test_the_judge_sees_the_saved_pixels_and_the_summary_is_their_means(tmp_path, case):
    source, pairs = _source_run(tmp_path / "src")
    lines = []
    adapter = FakeAdapter()
    metrics = judge_stage.judge_saved_attack(source, adapter, log=lines.append)
    assert case.cfgs == [{"name": "recording_case"}]  # the case is rebuilt from the source's config
    assert case.adapters == [adapter] * 4  # the judging model judges both images of each base
    # Each base's info is the sample's own (the case's judge and utility read it; no original image needed).
    assert case.infos == [{"task": "t0"}] * 3 + [{"task": "t1"}] * 3
    # Clean then adversarial, base by base, each exactly the saved PNG's pixels (PNG deploy: no transform).
    assert len(case.shown) == 4
    for (clean, adv), shown_clean, shown_adv, key in zip(pairs, case.shown[::2], case.shown[1::2], ("k0", "k1")):
        np.testing.assert_array_equal(shown_clean[0], np.asarray(clean, dtype=np.float64))
        np.testing.assert_array_equal(shown_adv[0], np.asarray(adv, dtype=np.float64))
        assert shown_clean[1] == shown_adv[1] == key
    adv_means = [np.asarray(a, dtype=np.float64).mean() / 255 for _, a in pairs]
    clean_means = [np.asarray(c, dtype=np.float64).mean() / 255 for c, _ in pairs]
    assert metrics["images"] == 2
    assert metrics["asr"]["mean"] == pytest.approx(sum(adv_means) / 2)
    assert metrics["clean_baseline"]["mean"] == pytest.approx(sum(clean_means) / 2)
    assert metrics["asr_by"]["task"]["t1"]["mean"] == pytest.approx(adv_means[1])
    # Stealth from the saved files: L-inf of two independent random images, in [0, 1] pixel units.
    linf = [np.abs(np.asarray(a, dtype=np.int16) - np.asarray(c, dtype=np.int16)).max() / 255 for c, a in pairs]
    assert metrics["stealth"]["linf"] == pytest.approx(sum(linf) / 2, abs=1e-6)
    # The craft's budget, winner and time travel with each judged sample.
    assert metrics["budget_saved"] == pytest.approx(1 - (3 + 4) / 20)
    assert metrics["won_by"] == {"pgd": 2}
    assert metrics["attack_seconds"] == 2.0
    assert lines == [f"judged 2 crafted image(s) from {source.resolve()} with fake/model (deploy=png)"]


def test_a_deploy_transform_reaches_both_images_but_stealth_is_of_the_saved_files(tmp_path, case):
    source, pairs = _source_run(tmp_path / "src", n=1)
    jpeg = build_deploy(JPEG_75)
    lines = []
    metrics = judge_stage.judge_saved_attack(source, FakeAdapter(), log=lines.append, deploy=jpeg)
    (clean, adv), = pairs
    np.testing.assert_array_equal(case.shown[0][0], _pillow_jpeg(clean, 75))
    np.testing.assert_array_equal(case.shown[1][0], _pillow_jpeg(adv, 75))
    assert not np.array_equal(case.shown[1][0], np.asarray(adv, dtype=np.float64))  # the transform did something
    linf = np.abs(np.asarray(adv, dtype=np.int16) - np.asarray(clean, dtype=np.int16)).max() / 255
    assert metrics["stealth"]["linf"] == pytest.approx(linf, abs=1e-6)
    assert lines[0].endswith("(deploy=jpeg_75)")


def test_reload_deployed_returns_the_saved_image_and_what_the_victim_receives(tmp_path):
    source, pairs = _source_run(tmp_path / "src", n=1)
    path = next((source / "images").glob("*-adversarial-*.png"))
    saved, sent = judge_stage.reload_deployed(path, PNG)
    assert saved is sent and saved.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(saved), np.asarray(pairs[0][1]))
    saved, sent = judge_stage.reload_deployed(path, build_deploy({"name": "q", "steps": [{"kind": "jpeg", "quality": 30}]}))
    np.testing.assert_array_equal(np.asarray(saved), np.asarray(pairs[0][1]))
    np.testing.assert_array_equal(np.asarray(sent, dtype=np.float64), _pillow_jpeg(pairs[0][1], 30))
    assert judge_stage.reload_png(path).mode == "RGB"
    np.testing.assert_array_equal(np.asarray(judge_stage.reload_png(path)), np.asarray(pairs[0][1]))
    grey = Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6), "L")
    grey.save(tmp_path / "grey.png")
    assert judge_stage.reload_png(tmp_path / "grey.png").mode == "RGB"
    np.testing.assert_array_equal(np.asarray(judge_stage.reload_png(tmp_path / "grey.png")), np.asarray(grey.convert("RGB")))


def test_a_judge_record_copies_the_pngs_keeps_the_source_spec_and_resumes(tmp_path, case):
    from mmsafety.records import RunRecord, read_samples

    source, pairs = _source_run(tmp_path / "src")
    out = tmp_path / "judge"
    record = RunRecord.open(out, "visual_attack", {"judge": "fake"})
    metrics = judge_stage.judge_saved_attack(source, FakeAdapter(), record, log=lambda line: None, model_name="Shown name")
    record.close()
    samples = read_samples(out / "samples.jsonl")
    source_samples = read_samples(source / "samples.jsonl")
    assert [s["image"] for s in samples] == [0, 1]
    for s, src in zip(samples, source_samples):
        # Paths relative to the judge's own folder; the bytes are the source's.
        assert s["clean_png"] == src["clean_png"] and s["adversarial_png"] == src["adversarial_png"]
        assert (out / s["adversarial_png"]).read_bytes() == (source / src["adversarial_png"]).read_bytes()
        assert (out / s["clean_png"]).read_bytes() == (source / src["clean_png"]).read_bytes()
        assert s["source_run"] == str(source.resolve()) and s["status"] == "ok" and s["key"] == src["key"]
        for field in ("best_loss", "steps_run", "attack_seconds", "steps_budget", "attack_won", "base"):
            assert s[field] == src[field], field
        assert s["outputs"]["adversarial"][0]["key"] == s["outputs"]["clean"][0]["key"] == src["key"]
        assert s["outputs"]["clean"][0]["mean"] != s["outputs"]["adversarial"][0]["mean"]
        assert set(s) >= {"stealth", "clean", "adversarial", "utility"}
    data = record.data
    assert data["model"] == {"name": "Shown name", "id": "fake/model", "adapter": "fake", "weights_sha256": "abc123"}
    spec = data["spec"]
    assert spec["stage"] == "judge" and spec["source_run"] == str(source.resolve())
    assert spec["deploy"] == {"name": "png", "steps": []}
    assert spec["source_model"] == {"name": "crafter", "id": "crafter/id"}
    assert spec["group_by"] == ["task"] and "notes" not in spec
    assert metrics["images"] == 2
    # Resumed: the judged images are not judged again, and the metrics are still of both.
    shown = len(case.shown)
    again = RunRecord.open(out, "visual_attack", {"judge": "fake"})
    lines = []
    resumed = judge_stage.judge_saved_attack(source, FakeAdapter(), again, log=lines.append)
    again.close()
    assert len(case.shown) == shown and lines[0].startswith("judged 0 crafted image(s)")
    assert resumed == metrics
    assert again.data["model"]["name"] == "fake"   # the adapter's name without model_name


def test_a_resumed_judge_record_judges_only_the_images_it_lacks_and_keeps_its_own_spec(tmp_path, case):
    from mmsafety.records import RunRecord, read_samples

    source, _ = _source_run(tmp_path / "src", n=3)
    lines = (source / "samples.jsonl").read_text().splitlines()
    (source / "samples.jsonl").write_text(lines[1] + "\n")  # the craft run had finished image 1 only
    out = tmp_path / "judge"
    record = RunRecord.open(out, "visual_attack", {"judge": "fake"})
    record.update(spec={"stage": "judge", "note": "set by the caller"})
    judge_stage.judge_saved_attack(source, FakeAdapter(), record, log=lambda line: None)
    record.close()
    assert record.data["spec"] == {"stage": "judge", "note": "set by the caller"}  # a spec it has is kept
    (source / "samples.jsonl").write_text("\n".join(lines) + "\n")  # then images 0 and 2 too
    again = RunRecord.open(out, "visual_attack", {"judge": "fake"})
    judge_stage.judge_saved_attack(source, FakeAdapter(), again, log=lambda line: None)
    again.close()
    assert [s["image"] for s in read_samples(out / "samples.jsonl")] == [1, 0, 2]
    assert [key for _, key in case.shown] == ["k1", "k1", "k0", "k0", "k2", "k2"]


def test_a_source_record_without_spec_model_or_base_is_judged_with_empty_ones(tmp_path, case):
    from mmsafety.records import RunRecord, read_samples

    source, _ = _source_run(tmp_path / "src", n=1)
    sample = json.loads((source / "samples.jsonl").read_text())
    del sample["base"]
    (source / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    (source / "record.json").write_text(json.dumps({"kind": "visual_attack", "config": {"case": {"name": "c"}}}))
    record = RunRecord.open(tmp_path / "judge", "visual_attack", {"judge": "fake"})
    judge_stage.judge_saved_attack(source, FakeAdapter(), record, log=lambda line: None)
    record.close()
    assert record.data["spec"] == {"stage": "judge", "source_run": str(source.resolve()),
                                   "deploy": {"name": "png", "steps": []}, "source_model": {}}
    assert read_samples(tmp_path / "judge" / "samples.jsonl")[0]["base"] == {}
    assert case.infos == [{}, {}, {}]


def test_read_source_run_keeps_only_crafted_samples_and_refuses_what_is_not_an_attack_run(tmp_path):
    errored = {"image": 9, "key": "k9", "status": "error", "clean_png": "a.png", "adversarial_png": "b.png"}
    no_png = {"image": 8, "key": "k8", "status": "ok", "clean_png": None, "adversarial_png": "b.png"}
    no_clean = {"image": 7, "key": "k7", "status": "ok", "adversarial_png": "b.png"}
    source, _ = _source_run(tmp_path / "src", extra_samples=[errored, no_png, no_clean])
    path, record, crafted = judge_stage.read_source_run(str(source / ".." / "src"))
    assert path == source.resolve() and record["kind"] == "visual_attack"
    assert [s["image"] for s in crafted] == [0, 1]

    with pytest.raises(UserError, match=r"not an attack run folder with a readable record\.json"):
        judge_stage.read_source_run(tmp_path / "nothing")
    for bad in ({"kind": "goat_bench", "config": {"case": {"name": "x"}}},   # another workload
                {"kind": "visual_attack", "config": {"case": "tool_call"}},  # a case that is not a mapping
                {"kind": "visual_attack", "config": {}},                      # no case
                ["not", "a", "record"]):
        (source / "record.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match="point it at the folder mmsafety-attack wrote"):
            judge_stage.read_source_run(source)
    (source / "record.json").write_text(json.dumps({"kind": "goat_bench", "config": {"case": {"name": "x"}}}))
    with pytest.raises(UserError, match="record is of kind 'goat_bench'"):
        judge_stage.read_source_run(source)
    (source / "record.json").write_text(json.dumps({"kind": "k" * 60, "config": {"case": {"name": "x"}}}))
    with pytest.raises(UserError, match="record is of kind '" + "k" * 40 + "'"):  # an edited kind, cut at 40
        judge_stage.read_source_run(source)

    empty, _ = _source_run(tmp_path / "empty", n=0, extra_samples=[errored])
    with pytest.raises(UserError, match="this attack run saved no PNGs"):
        judge_stage.read_source_run(empty)


def test_saved_pngs_are_the_samples_files_and_a_path_out_of_the_folder_is_refused(tmp_path):
    source, _ = _source_run(tmp_path / "src", n=1)
    sample = json.loads((source / "samples.jsonl").read_text().splitlines()[0])
    clean, adv = judge_stage.saved_pngs(source, sample)
    assert clean == (source / sample["clean_png"]).resolve() and adv == (source / sample["adversarial_png"]).resolve()
    for role in ("clean_png", "adversarial_png"):
        for bad in ("../elsewhere.png", "/etc/passwd", None):
            with pytest.raises(UserError, match=rf"image 0's {role} {re.escape(repr(bad))} is not a file inside "
                                                rf"the run folder"):
                judge_stage.saved_pngs(source, {**sample, role: bad})


def test_keep_copy_writes_the_verified_bytes_once_and_refuses_a_modified_png(tmp_path):
    source, _ = _source_run(tmp_path / "src", n=1)
    png = next((source / "images").glob("*-clean-*.png"))
    out = tmp_path / "out"
    copy = judge_stage.keep_copy(png, out)
    assert copy == out / "images" / png.name and copy.read_bytes() == png.read_bytes()
    copy.write_bytes(b"kept as it is")  # an existing copy is kept, not rewritten
    assert judge_stage.keep_copy(png, out).read_bytes() == b"kept as it is"
    png.write_bytes(png.read_bytes() + b"tampered")
    with pytest.raises(UserError, match="modified since the attack saved it"):
        judge_stage.keep_copy(png, tmp_path / "other")
    assert not (tmp_path / "other" / "images" / png.name).exists()


def test_a_model_without_what_the_case_needs_is_refused_before_any_image_is_judged(tmp_path, case):
    from mmsafety.errors import ConfigError

    source, _ = _source_run(tmp_path / "src", n=1)
    case.judge_needs = frozenset({"generate"})
    with pytest.raises(ConfigError, match="judging case=recording_case needs a model that can generate.*; Shown"):
        judge_stage.judge_saved_attack(source, FakeAdapter(), log=lambda line: None, model_name="Shown")
    assert case.shown == []
    assert judge_stage.judge_saved_attack(source, GeneratingAdapter(), log=lambda line: None)["images"] == 1


class ServedFakeAdapter(FakeAdapter):
    """A served judging model: its accounting goes into each invocation's entry."""

    def served_record(self):
        return {"accounting": {"requests": len(self.calls), "retry_reasons": {}, "cost": None}}

    def __init__(self):
        self.calls = []


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR2"), reason="POSIX signals")
def test_a_judge_warned_mid_image_writes_that_image_stops_and_the_same_run_resumes_after_it(tmp_path, case):
    """A cluster's warning (SIGUSR2) while image 0 is judged: the image is finished and written, the record
    says this invocation was partial (with the served model's accounting), the signal goes on to the
    job's handler, and the same run then judges only images 1 and 2. As the SLURM test checks on a real
    cluster (tests/test_slurm_requeue.py), here in process in well under a second."""
    import os
    import signal

    from mmsafety.records import RunRecord, read_samples

    class Requeued(Exception):
        pass

    def requeue(signum, frame):
        raise Requeued

    source, _ = _source_run(tmp_path / "src", n=3)
    adapter = ServedFakeAdapter()
    judge = case.judge

    def warned_once(adapter_, image, base):
        adapter.calls.append(base.key)
        if len(adapter.calls) == 1:
            os.kill(os.getpid(), signal.SIGUSR2)  # arrives while image 0's clean image is being judged
        return judge(adapter_, image, base)

    case.judge = warned_once
    out, lines = tmp_path / "judge", []
    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        record = RunRecord.open(out, "visual_attack", {"judge": "fake"})
        with pytest.raises(Requeued):
            judge_stage.judge_saved_attack(source, adapter, record, log=lines.append)
        assert signal.getsignal(signal.SIGUSR2) is requeue  # the job's own handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert adapter.calls == ["k0", "k0"]  # image 0's clean and adversarial judged, image 1 not started
    assert [s["image"] for s in read_samples(out / "samples.jsonl")] == [0]
    assert lines == ["SIGUSR2: stopping after 1 of 3 judged images (all written); the same run resumes from there"]
    written = json.loads((out / "record.json").read_text())
    assert [i["status"] for i in written["invocations"]] == ["partial"]
    assert written["invocations"][0]["accounting"]["requests"] == 2
    record.close()

    again = RunRecord.open(out, "visual_attack", {"judge": "fake"})
    metrics = judge_stage.judge_saved_attack(source, adapter, again, log=lambda line: None)
    again.close()
    assert adapter.calls == ["k0", "k0", "k1", "k1", "k2", "k2"]  # nothing judged twice
    assert [s["image"] for s in read_samples(out / "samples.jsonl")] == [0, 1, 2] and metrics["images"] == 3


def test_without_a_record_signals_are_not_held(tmp_path, case):
    """No record to write to: the judge installs no handler, so a signal acts at once, mid-image."""
    import os
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    source, _ = _source_run(tmp_path / "src", n=2)
    judge = case.judge

    def signalled(adapter_, image, base):
        os.kill(os.getpid(), signal.SIGTERM)
        return judge(adapter_, image, base)

    case.judge = signalled
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Interrupted):
            judge_stage.judge_saved_attack(source, FakeAdapter(), log=lambda line: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert case.shown == []  # stopped inside the first judge call, before it recorded anything
