"""Deploy transforms (conf/deploy/): what a saved PNG becomes on its way to the victim, checked
against Pillow encoding the same image directly; saved PNG names and their sha256 check."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmsafety.app import compose_config
from mmsafety.errors import ConfigError, UserError
from visual_attacks.deploy import PNG, build_deploy, decode
from visual_attacks.png_names import png_name, read_verified_png, sha256_in_name

CONF = Path(__file__).resolve().parents[1] / "conf" / "deploy"


def photo(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: JPEG loses some of it, more at lower quality."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def preset(name: str):
    return build_deploy(compose_config("judge", ["attack_run=unused", f"deploy={name}"]).deploy)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_deploy_preset_composes_and_records_its_name_and_steps(name):
    deploy = preset(name)
    assert deploy.name == name
    written = yaml.safe_load((CONF / f"{name}.yaml").read_text())["steps"]
    assert [s["kind"] for s in deploy.spec()["steps"]] == [s["kind"] for s in written]
    out = decode(deploy.apply(png_bytes(photo(96, 80))))
    assert out.mode == "RGB"


def test_png_hands_over_the_saved_bytes_unchanged():
    data = png_bytes(photo())
    assert preset("png").apply(data) == data and PNG.apply(data) == data


def test_jpeg_is_pillows_jpeg_at_that_quality_and_loses_more_at_lower_quality():
    image = photo()
    data = png_bytes(image)
    errors = {}
    for q in (90, 75, 50):
        sent = preset(f"jpeg_{q}").apply(data)
        assert sent[:2] == b"\xff\xd8"  # a JPEG file
        reference = io.BytesIO()
        image.save(reference, format="JPEG", quality=q, subsampling=2)
        assert sent == reference.getvalue()
        errors[q] = np.abs(pixels(decode(sent)) - pixels(image)).mean()
    assert 0 < errors[90] < errors[75] < errors[50]


def test_downscale_and_resize_longest_match_pillows_resize():
    image = photo(100, 60)
    half = decode(preset("downscale_2").apply(png_bytes(image)))
    assert half.size == (50, 30)
    assert np.array_equal(pixels(half), pixels(image.resize((50, 30), Image.Resampling.BICUBIC)))
    big = photo(1024, 600)
    shrunk = decode(preset("resize_512").apply(png_bytes(big)))
    assert shrunk.size == (512, 300)
    # Chat products only shrink: a small image passes at its own size, pixel for pixel.
    small = photo(64, 64)
    assert np.array_equal(pixels(decode(preset("resize_512").apply(png_bytes(small)))), pixels(small))
    enlarge = build_deploy({"name": "up", "steps": [{"kind": "resize_longest", "size": 128, "enlarge": True}]})
    assert decode(enlarge.apply(png_bytes(small))).size == (128, 128)


def test_a_composition_resizes_then_compresses_once():
    image = photo(1536, 1024)
    sent = preset("resize_768_jpeg_75").apply(png_bytes(image))
    assert sent[:2] == b"\xff\xd8" and decode(sent).size == (768, 512)
    reference = io.BytesIO()
    image.resize((768, 512), Image.Resampling.BICUBIC).save(reference, format="JPEG", quality=75, subsampling=2)
    assert sent == reference.getvalue()


@pytest.mark.parametrize("steps, message", [
    ([{"kind": "gif"}], "deploy.steps\\[\\].kind=gif: not registered; use one of downscale, jpeg, resize_longest"),
    ([{"kind": "jpeg", "quality": 0}], "quality=0; use a whole number from 1 to 100"),
    ([{"kind": "jpeg", "qualty": 75}], "unknown parameter\\(s\\) qualty; it takes quality, subsampling"),
    ([{"kind": "downscale", "factor": 0.5}], "factor=0.5; use a number >= 1"),
    ([{"kind": "resize_longest", "resample": "smooth"}], "resample='smooth'; use one of nearest"),
    (["jpeg"], "write each step as"),
])
def test_a_bad_deploy_step_is_one_line(steps, message):
    with pytest.raises(ConfigError, match=message) as e:
        build_deploy({"name": "mine", "steps": steps})
    assert "\n" not in str(e.value)


def test_mmsafety_attack_refuses_a_bad_deploy_before_any_model_loads():
    from mmsafety.app import validate_job

    import visual_attacks.workload  # noqa: F401

    cfg = compose_config("attack", ["deploy=jpeg_75", "deploy.steps.0.quality=500"])
    with pytest.raises(ConfigError, match="quality=500"):
        validate_job("visual_attack", cfg)


def test_png_names_tell_clean_from_adversarial_and_keep_the_sha256(tmp_path):
    data = png_bytes(photo())
    sha = hashlib.sha256(data).hexdigest()
    assert png_name(data, 3, "adversarial") == f"0003-adversarial-{sha}.png"
    assert sha256_in_name(Path(f"0003-clean-{sha}.png")) == sha
    assert sha256_in_name(Path(f"{sha}.png")) == sha  # runs saved before the role was in the name
    assert sha256_in_name(Path("photo.png")) is None
    new, old = tmp_path / png_name(data, 0, "clean"), tmp_path / f"{sha}.png"
    new.write_bytes(data)
    old.write_bytes(data)
    assert read_verified_png(new) == data == read_verified_png(old)


def test_a_modified_or_unnamed_png_is_refused_in_one_line(tmp_path):
    data = png_bytes(photo())
    path = tmp_path / png_name(data, 1, "adversarial")
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UserError, match="modified since the attack saved it") as e:
        read_verified_png(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    other = tmp_path / "holiday.png"
    other.write_bytes(data)
    with pytest.raises(UserError, match="carries no sha256"):
        read_verified_png(other)
    with pytest.raises(UserError, match="cannot read the saved PNG"):
        read_verified_png(tmp_path / png_name(b"gone", 2, "clean"))
