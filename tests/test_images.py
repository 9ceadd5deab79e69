"""The one image loader: odd but valid images load correctly, broken or hostile ones are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmsafety.images import MAX_PIXELS, ImageRejected, load_image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg").image
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 150 and top[0] < 100  # the blue side is now on top


def test_animation_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    loaded = load_image(tmp_path / "a.gif")
    assert np.asarray(loaded.image)[0, 0, 0] > 200 and any("first frame" in n for n in loaded.notes)


def test_16bit_gray_is_rescaled_not_saturated(tmp_path):
    arr = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    loaded = load_image(tmp_path / "g16.png")
    px = np.asarray(loaded.image)[..., 0]
    assert px.min() == 0 and px.max() == 255 and len(np.unique(px)) > 32
    assert any("rescaled" in n for n in loaded.notes)


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_transparency_is_composited_on_white(tmp_path, mode):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    if mode == "P":
        img = img.convert("RGB").convert("P")
        img.info["transparency"] = 0
        img.save(tmp_path / "t.png", transparency=0)
    else:
        img.save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png").image).min() == 255


def test_cmyk_and_tiny_and_extreme_aspect(tmp_path):
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    Image.new("RGB", (2000, 2)).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "c.jpg").image.mode == "RGB"
    assert load_image(tmp_path / "one.png").image.size == (1, 1)
    assert load_image(tmp_path / "wide.png").image.size == (2000, 2)


def test_longest_side_is_capped(tmp_path):
    Image.new("RGB", (300, 100)).save(tmp_path / "big.png")
    loaded = load_image(tmp_path / "big.png", max_side=150)
    assert loaded.image.size == (150, 50) and any("downscaled" in n for n in loaded.notes)


@pytest.mark.parametrize("content,reason", [
    (b"", "not an image"), (b"garbage bytes that are not an image" * 10, "not an image"),
])
def test_garbage_is_refused(tmp_path, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageRejected, match=reason):
        load_image(tmp_path / "x.png")


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected, match="corrupt"):
        load_image(tmp_path / "cut.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageRejected, match="missing"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_is_refused(tmp_path):
    side = int(MAX_PIXELS ** 0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # tiny file, huge canvas
    with pytest.raises(ImageRejected, match="too large"):
        load_image(tmp_path / "bomb.png")
