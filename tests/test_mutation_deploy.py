"""Deploy transforms (visual_attacks/deploy.py): behaviours the survivors of `make mutation`'s `deploy`
group showed untested (docs/testing.md lists them). References: Pillow's own conversions, OmegaConf's
interpolation, and labels written out by hand."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from mmsafety.errors import ConfigError
from visual_attacks import deploy
from visual_attacks.deploy import PNG, build_deploy, decode, deploy_label


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_a_config_without_a_name_is_the_png_transform():
    """Hydra's schema default and the shipped `png` preset: a deploy config with no name (an old record's
    spec, a hand-written dict) is `png`, and with steps still says png in the record."""
    assert build_deploy({}) == PNG
    assert build_deploy(None) == PNG
    assert build_deploy(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "deploy" / "png.yaml")) == PNG
    with_steps = build_deploy({"steps": [{"kind": "jpeg"}]})
    assert with_steps.name == "png" and with_steps.spec()["name"] == "png"


def test_a_step_that_is_not_a_mapping_with_a_kind_is_one_line():
    for bad in ("jpeg", {"quality": 75}, ["jpeg"], 3):
        with pytest.raises(ConfigError, match=r"deploy=d: step 0 is .*; write each step as \{kind: jpeg, quality: 75\}"):
            build_deploy({"name": "d", "steps": [bad]})
    with pytest.raises(ConfigError, match=r"step 1 is 'jpeg'"):
        build_deploy({"name": "d", "steps": [{"kind": "jpeg"}, "jpeg"]})


def test_interpolations_in_a_deploy_config_are_resolved():
    """A Hydra config may write `quality: ${...}`: the step gets the value, not the text of the reference."""
    cfg = OmegaConf.create({"q": 50, "deploy": {"name": "jpeg_${q}", "steps": [{"kind": "jpeg", "quality": "${q}"}]}})
    built = build_deploy(cfg.deploy)
    assert built.name == "jpeg_50"
    assert built.steps == ({"kind": "jpeg", "quality": 50, "subsampling": "4:2:0"},)


def test_decode_gives_rgb_whatever_the_file_stores():
    """A step (or a user's PNG) may store grey or RGBA pixels; the model is given RGB, as Pillow converts."""
    rng = np.random.default_rng(4)
    for mode, shape in (("L", (6, 5)), ("RGBA", (6, 5, 4)), ("RGB", (6, 5, 3))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        got = decode(_png(image))
        assert got.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(got), np.asarray(image.convert("RGB")))


def test_labels_of_a_users_own_transform_and_of_odd_records_spell_out_every_step():
    two = {"name": "my_pipeline", "steps": [{"kind": "downscale", "factor": 2, "resample": "bicubic"},
                                            {"kind": "jpeg", "quality": 60, "subsampling": "4:2:0"}]}
    assert deploy_label(two) == ("my_pipeline [kind=downscale factor=2 resample=bicubic; "
                                 "kind=jpeg quality=60 subsampling=4:2:0]")
    # A preset's name but an edited record whose steps are not mappings: shown as written, no crash.
    assert deploy_label({"name": "odd", "steps": ["jpeg", 3]}) == "odd [jpeg; 3]"
    # A name with no preset file is never taken for a preset, whatever its steps.
    assert deploy_label({"name": "no_such_preset", "steps": [{"kind": "jpeg", "quality": 75, "subsampling": "4:2:0"}]}) \
        == "no_such_preset [kind=jpeg quality=75 subsampling=4:2:0]"


def test_a_preset_named_with_capitals_is_recognised_as_itself(tmp_path, monkeypatch):
    """Preset names are file names: upper-case letters are as valid as lower-case ones (a package that
    ships its own presets; here a stand-in for `mmsafety.conf`)."""
    package = tmp_path / "my_conf_pkg"
    (package / "deploy").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "deploy" / "JPEG_Q60.yaml").write_text("name: JPEG_Q60\nsteps:\n  - kind: jpeg\n    quality: 60\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(deploy, "CONFIG_PACKAGE", "my_conf_pkg")
    spec = build_deploy(OmegaConf.load(str(package / "deploy" / "JPEG_Q60.yaml"))).spec()
    assert deploy_label(spec) == "JPEG_Q60"
    changed = {**spec, "steps": [{**spec["steps"][0], "quality": 61}]}
    assert deploy_label(changed) == "JPEG_Q60 [kind=jpeg quality=61 subsampling=4:2:0]"
