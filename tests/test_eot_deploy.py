"""The machinery behind the transfer evidence (issue 17), not a result: an attack crafted with EOT and
judged under `deploy=jpeg_75` is measured on the real JPEG bytes. The bytes the victim's images are
decoded from hash-equal Pillow's own JPEG encoding (quality 75, 4:2:0) of the saved PNG, the images
the judge scores are exactly those decoded JPEGs, and the rates in the record are the rates of those
images (a second, independent judgement of the same files gives the same numbers)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visual_attacks.judge as judge_module
from mmsafety.records import read_samples
from visual_attacks.cases import ToolCallCase
from visual_attacks.cli import run_attack_job
from visual_attacks.deploy import build_deploy, decode
from visual_attacks.judge import judge_saved_attack

pytestmark = pytest.mark.slow  # a 6-step EOT attack on the organism, judged twice (about 30 s on 2 idle cores)

JPEG_75 = {"name": "jpeg_75", "steps": [{"kind": "jpeg", "quality": 75}]}


def pillow_jpeg_75(png: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(png).convert("RGB").save(buf, format="JPEG", quality=75, subsampling=2)  # 2: 4:2:0
    return buf.getvalue()


def test_an_eot_attack_under_jpeg_75_is_judged_on_the_real_jpeg_bytes(tmp_path, organism, monkeypatch):
    decoded, judged = [], []  # (sha256 of the bytes, image) for every decode; the image of every judgement
    real_decode, real_judge = judge_module.decode, ToolCallCase.judge

    def recording_decode(data: bytes):
        image = real_decode(data)
        decoded.append((hashlib.sha256(data).hexdigest(), np.asarray(image)))
        return image

    def recording_judge(self, adapter, image, base):
        judged.append(np.asarray(image))
        return real_judge(self, adapter, image, base)

    monkeypatch.setattr(judge_module, "decode", recording_decode)
    monkeypatch.setattr(ToolCallCase, "judge", recording_judge)
    out = tmp_path / "eot"
    metrics, record_path = run_attack_job(out, "attack.eps=32/255", "attack.steps=6", "images=2", "heldout_prompts=2",
                                          "attack.prompts_per_step=2", "attack.eot.samples=2", "deploy=jpeg_75")
    record = json.loads(Path(record_path).read_text())
    assert record["spec"]["eot"]  # crafted with EOT (its description), judged under jpeg_75
    deploy = record["spec"]["deploy"]
    assert deploy["name"] == "jpeg_75" and [(s["kind"], s["quality"]) for s in deploy["steps"]] == [("jpeg", 75)]

    samples = read_samples(out / "samples.jsonl")
    assert len(samples) == 2 and len(judged) == 4  # a clean and an adversarial image per base
    decoded_by_hash = {sha: image for sha, image in decoded}
    for sample, (clean_seen, adv_seen) in zip(samples, zip(judged[0::2], judged[1::2])):
        for key, seen in (("clean_png", clean_seen), ("adversarial_png", adv_seen)):
            png = out / sample[key]
            jpeg = pillow_jpeg_75(png)
            # The victim's image was decoded from bytes that hash-equal Pillow's JPEG of the saved PNG...
            assert hashlib.sha256(jpeg).hexdigest() in decoded_by_hash
            # ...and it is exactly that decoded JPEG, not the lossless PNG it came from.
            assert np.array_equal(seen, np.asarray(decode(jpeg)))
            assert not np.array_equal(seen, np.asarray(Image.open(png).convert("RGB")))

    # The record's rates are those of the JPEG-decoded images: judging the same files again, on the
    # same organism under the same transform, reproduces them.
    monkeypatch.setattr(ToolCallCase, "judge", real_judge)
    again = judge_saved_attack(out, organism, log=lambda line: None, deploy=build_deploy(JPEG_75))
    assert (again["asr"], again["clean_baseline"]) == (metrics["asr"], metrics["clean_baseline"])
