"""`mmsafety-judge` (the transfer workload) on a short organism attack: judging the source model with
deploy=png gives exactly the source run's rates; a deploy transform is measured on the real JPEG bytes;
bad input is refused in one line before any model loads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsafety.errors import ConfigError, UserError
from mmsafety.records import read_samples
from visual_attacks.cli import run_attack_job, run_judge_job
from visual_attacks.deploy import build_deploy
from visual_attacks.judge import judge_saved_attack

pytestmark = pytest.mark.slow  # a 100-step attack on the organism, then a few judgings (about 1 min on 2 cores)


@pytest.fixture(scope="module")
def source(tmp_path_factory, organism):
    out = tmp_path_factory.mktemp("craft") / "run"
    run_attack_job(out, "attack.steps=100", "attack.eps=32/255", "images=2", "heldout_prompts=4")
    return out


def test_self_transfer_with_png_gives_exactly_the_source_runs_rates(source, tmp_path):
    metrics, record_path = run_judge_job(tmp_path / "judge", source, "model=organism", "deploy=png")
    record = json.loads(open(record_path).read())
    source_record = json.loads((source / "record.json").read_text())
    assert metrics == source_record["metrics"] == record["metrics"]
    # Not a trivial 0 == 0: the 100-step attack at 32/255 makes the (shipped) organism call the tool more often than the clean images do (20 steps at 16/255 no longer did).
    assert source_record["metrics"]["asr"]["syntax"] > source_record["metrics"]["clean_baseline"]["syntax"]
    assert record["kind"] == "transfer" and record["status"] == "completed"
    spec = record["spec"]
    assert spec["surrogates"] == ["organism (seed 0)"] and spec["victim"] == "organism (seed 0)"
    assert spec["source_run"] == str(source.resolve()) and spec["deploy"] == {"name": "png", "steps": []}
    assert (spec["case"], spec["target"], spec["eps"], spec["steps"]) == ("tool_call", "send_email", 32 / 255, 100)
    judged = {s["image"]: s for s in read_samples(Path(record_path).with_name("samples.jsonl"))}
    for s in read_samples(source / "samples.jsonl"):  # the same answers, image by image
        assert judged[s["image"]]["outputs"] == s["outputs"] and judged[s["image"]]["adversarial"] == s["adversarial"]
    # The same command again resumes: every sample kept (none refused by the record checks), none judged twice.
    again, _ = run_judge_job(tmp_path / "judge", source, "model=organism", "deploy=png")
    resumed = json.loads(open(record_path).read())
    assert again == metrics and resumed["timing"]["resumes"] == 1 and "resume_rejected" not in resumed
    assert len(read_samples(Path(record_path).with_name("samples.jsonl"))) == 2


def test_a_deploy_transform_is_judged_on_the_real_jpeg_bytes(source, organism, monkeypatch):
    seen = []
    generate = organism.generate
    monkeypatch.setattr(organism, "generate", lambda images, prompts, **kw: seen.extend(images) or generate(images, prompts, **kw))
    judge_saved_attack(source, organism, log=lambda line: None, deploy=build_deploy(
        {"name": "jpeg_75", "steps": [{"kind": "jpeg", "quality": 75}]}))
    first = read_samples(source / "samples.jsonl")[0]
    expected = []
    for key in ("clean_png", "adversarial_png"):
        saved = Image.open(source / first[key]).convert("RGB")
        buf = io.BytesIO()
        saved.save(buf, format="JPEG", quality=75)
        expected.append((np.asarray(saved), np.asarray(Image.open(buf).convert("RGB"))))
    for (saved, jpeg), got in zip(expected, [seen[0], seen[4]]):  # 4 held-out prompts per image
        assert np.array_equal(np.asarray(got), jpeg) and not np.array_equal(jpeg, saved)


def test_a_victim_that_cannot_judge_the_case_is_refused_before_it_loads(source, tmp_path):
    with pytest.raises(ConfigError, match="needs a model that can generate"):
        run_judge_job(tmp_path / "j", source, "model=tiny_open_clip")
    assert not (tmp_path / "j").exists()


def test_not_an_attack_run_or_no_pngs_is_one_line(source, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an attack run"):
        run_judge_job(tmp_path / "j1", tmp_path / "empty")
    copy = tmp_path / "nopngs"
    shutil.copytree(source, copy)
    (copy / "samples.jsonl").write_text("")
    with pytest.raises(UserError, match="saved no PNGs"):
        run_judge_job(tmp_path / "j2", copy)
    sweep = tmp_path / "sweep"
    shutil.copytree(source, sweep / "0-a")
    shutil.copytree(source, sweep / "1-b")
    with pytest.raises(UserError, match="sweep folder holding 2 attack run"):
        run_judge_job(tmp_path / "j3", sweep)


def test_a_modified_png_is_refused_not_judged_and_the_cli_says_so_in_one_line(source, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(source, copy)
    png = copy / read_samples(copy / "samples.jsonl")[1]["adversarial_png"]
    image = np.asarray(Image.open(png).convert("RGB")).copy()
    image[0, 0] ^= 1
    Image.fromarray(image).save(png)
    proc = run_cli_judge(f"attack_run={copy}", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert str(png) in line and "modified since the attack saved it" in line
    assert not (tmp_path / "out").exists()  # refused before any job ran


def test_pngs_with_old_hash_only_names_are_still_judged(source, tmp_path, organism):
    copy = tmp_path / "old"
    shutil.copytree(source, copy)
    samples = read_samples(copy / "samples.jsonl")
    for s in samples:
        for key in ("clean_png", "adversarial_png"):
            path = copy / s[key]
            old = path.with_name(f"{hashlib.sha256(path.read_bytes()).hexdigest()}.png")
            path.rename(old)
            s[key] = str(old.relative_to(copy))
    (copy / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    metrics = judge_saved_attack(copy, organism, log=lambda line: None)
    assert metrics == json.loads((source / "record.json").read_text())["metrics"]


def run_cli_judge(*args: str) -> subprocess.CompletedProcess:
    """`mmsafety-judge ARGS...` in a subprocess, as a user runs it (no full Hydra errors)."""
    command = "import sys; from visual_attacks.cli import judge_main; sys.exit(judge_main())"
    return subprocess.run([sys.executable, "-c", command, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def test_a_served_victim_judges_the_jpeg_bytes_as_the_local_model_does(source, organism, tmp_path):
    from tests.served_support import KEY_ENV, keyed_served_organism

    jpeg = build_deploy({"name": "jpeg_75", "steps": [{"kind": "jpeg", "quality": 75}]})
    local = judge_saved_attack(source, organism, log=lambda line: None, deploy=jpeg)
    with keyed_served_organism() as base_url:
        metrics, record_path = run_judge_job(tmp_path / "served", source, "model=openai_compatible",
                                             f"model.base_url={base_url}", f"model.api_key_env={KEY_ENV}",
                                             f"model.cache_path={tmp_path / 'cache.sqlite'}", "deploy=jpeg_75")
    assert (metrics["asr"], metrics["clean_baseline"]) == (local["asr"], local["clean_baseline"])
    spec = json.loads(Path(record_path).read_text())["spec"]
    assert spec["victim"] == "served-organism" and spec["deploy"]["name"] == "jpeg_75"


def test_mmsafety_attack_judges_its_own_pngs_under_a_deploy_transform(organism, tmp_path):
    run_attack_job(tmp_path / "run", "attack.steps=2", "attack.check_every=1", "images=1", "heldout_prompts=2",
                   "deploy=jpeg_50")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["spec"]["deploy"] == {"name": "jpeg_50", "steps": [{"kind": "jpeg", "quality": 50, "subsampling": "4:2:0"}]}
    assert record["held_out_checks"][0]["step"] == 1  # the check during the attack ran (deployed too)
    [sample] = read_samples(tmp_path / "run" / "samples.jsonl")
    jpeg = build_deploy(record["spec"]["deploy"])
    rejudged = judge_saved_attack(tmp_path / "run", organism, log=lambda line: None, deploy=jpeg)
    assert rejudged == record["metrics"]
    seen = []
    generate = organism.generate
    organism_images = lambda images, prompts, **kw: seen.extend(images) or generate(images, prompts, **kw)  # noqa: E731
    try:
        organism.generate = organism_images
        judge_saved_attack(tmp_path / "run", organism, log=lambda line: None, deploy=jpeg)
    finally:
        del organism.generate
    saved = Image.open(tmp_path / "run" / sample["adversarial_png"]).convert("RGB")
    buf = io.BytesIO()
    saved.save(buf, format="JPEG", quality=50)
    assert np.array_equal(np.asarray(seen[-1]), np.asarray(Image.open(buf).convert("RGB")))
