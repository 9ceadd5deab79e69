"""The differentiable preprocessing matches the real Hugging Face processor.

Tolerance (documented in the README): on normalised pixel values, max |diff| <= 0.02 and
mean |diff| <= 0.005 (CLIP std ~0.27, so 0.02 is ~1.4/255 in pixel units and the mean
~0.35/255), over noise, smooth images, memes and scenes from 31x47 to 640x480. Where the
image needs no resize the two are equal to float precision. The residual is the
processor's rounding to uint8 after each resize pass, which the attack's float path omits
to keep clean gradients.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mmsafety.models.pixels import ClipStylePreprocess, pil_to_pixels
from mmsafety.synthetic import memes, scenes

MAX_TOL, MEAN_TOL = 0.02, 0.005


def varied_images():
    rng = random.Random(3)
    out = [scenes.make_scene(rng, envelope=True).image, memes.memes("sarcasm", "heldout", 1)[0].image]
    for w, h in [(64, 64), (97, 64), (64, 200), (333, 250), (31, 47), (640, 480), (50, 400)]:
        arr = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        smooth = Image.fromarray(arr).resize((max(2, w // 8), max(2, h // 8))).resize((w, h), Image.BICUBIC)
        out += [Image.fromarray(arr), smooth]
    return out


def processors():
    from transformers import CLIPImageProcessor, LlavaImageProcessor

    kwargs = dict(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    yield "clip-torchvision", CLIPImageProcessor(**kwargs)
    yield "llava-pad-to-square", LlavaImageProcessor(do_pad=True, **kwargs)
    try:
        from transformers import CLIPImageProcessorPil

        yield "clip-pil", CLIPImageProcessorPil(**kwargs)
    except ImportError:
        pass
    yield "clip-336", CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


@pytest.mark.parametrize("name,hf", list(processors()), ids=lambda x: x if isinstance(x, str) else "")
def test_differentiable_preprocess_matches_hf_processor(name, hf):
    ours = ClipStylePreprocess.from_hf(hf)
    worst_max, worst_mean = 0.0, 0.0
    for im in varied_images():
        expected = hf(im, return_tensors="pt")["pixel_values"]
        got = ours(pil_to_pixels(im)[None])
        assert got.shape == expected.shape, (name, im.size)
        diff = (got - expected).abs()
        worst_max, worst_mean = max(worst_max, diff.max().item()), max(worst_mean, diff.mean().item())
        if im.size == (64, 64) and name != "clip-336":
            assert diff.max().item() < 1e-5  # no resize: identical
    assert worst_max <= MAX_TOL and worst_mean <= MEAN_TOL, (name, worst_max, worst_mean)


def test_preprocess_is_differentiable():
    from transformers import CLIPImageProcessor

    ours = ClipStylePreprocess.from_hf(CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}))
    x = torch.rand(2, 3, 80, 120, requires_grad=True)
    ours(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("max_side", [56, 448])
def test_qwen2_vl_patches_match_hf_processor(max_side):
    """Qwen2-VL: smart_resize, normalise and merged-order patches, against Qwen2VLImageProcessor,
    on the same varied images (same tolerance); grids equal; no-resize images identical."""
    from transformers import Qwen2VLImageProcessor

    from mmsafety.models.qwen2_vl import QwenPatchPreprocess

    hf = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_side * max_side)
    ours = QwenPatchPreprocess((max_side, max_side), hf.patch_size, hf.merge_size, hf.temporal_patch_size,
                               56 * 56, max_side * max_side, tuple(hf.image_mean), tuple(hf.image_std))
    worst_max, worst_mean = 0.0, 0.0
    for im in varied_images() + [Image.new("RGB", (max_side, max_side), (10, 200, 30))]:
        expected = hf(im, return_tensors="pt")
        got, grid = ours(pil_to_pixels(im)[None])
        assert grid.tolist() == expected["image_grid_thw"].tolist(), im.size
        diff = (got - expected["pixel_values"]).abs()
        worst_max, worst_mean = max(worst_max, diff.max().item()), max(worst_mean, diff.mean().item())
        if im.size == (max_side, max_side):
            assert diff.max().item() < 1e-5  # the attack resolution needs no resize: identical
    assert worst_max <= MAX_TOL and worst_mean <= MEAN_TOL, (worst_max, worst_mean)


@pytest.mark.parametrize("family", ["siglip", "blip"])
@pytest.mark.parametrize("side", [32, 224])
def test_squash_matches_siglip_and_blip_processors(side, family):
    """PaliGemma's SigLIP processor and BLIP's processor squash to a square (no crop): same
    tolerance; identity at size."""
    from transformers import BlipImageProcessor, SiglipImageProcessor

    from mmsafety.models.pixels import SquashPreprocess
    from mmsafety.organisms.tiny_llava import CLIP_MEAN, CLIP_STD

    size = {"height": side, "width": side}
    hf = (SiglipImageProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3) if family == "siglip"
          else BlipImageProcessor(size=size, image_mean=CLIP_MEAN, image_std=CLIP_STD))
    ours = SquashPreprocess((side, side), tuple(hf.image_mean), tuple(hf.image_std))
    worst_max, worst_mean = 0.0, 0.0
    for im in varied_images() + [Image.new("RGB", (side, side), (10, 200, 30))]:
        expected = hf(im, return_tensors="pt")["pixel_values"]
        got = ours(pil_to_pixels(im)[None])
        assert got.shape == expected.shape
        diff = (got - expected).abs()
        worst_max, worst_mean = max(worst_max, diff.max().item()), max(worst_mean, diff.mean().item())
        if im.size == (side, side):
            assert diff.max().item() < 1e-5
    assert worst_max <= MAX_TOL and worst_mean <= MEAN_TOL, (worst_max, worst_mean)


def test_llava_next_anyres_tiles_match_hf_processor():
    """LLaVA-NeXT: best grid, aspect-keeping resize, black padding, tiles and the squashed base image,
    against LlavaNextImageProcessor (same tolerance); tiles of an image at a grid size are identical."""
    from transformers import LlavaNextImageProcessor

    from mmsafety.models.llava_next import AnyResPreprocess

    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    hf = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                 image_grid_pinpoints=pinpoints)
    ours = AnyResPreprocess((672, 672), tuple(map(tuple, pinpoints)), 336, 336, tuple(hf.image_mean), tuple(hf.image_std))
    worst_max, worst_mean = 0.0, 0.0
    for im in varied_images() + [Image.new("RGB", (672, 672), (10, 200, 30))]:
        expected = hf(im, return_tensors="pt")["pixel_values"][0]
        got = ours(pil_to_pixels(im)[None])[0]
        assert got.shape == expected.shape, im.size
        diff = (got - expected).abs()
        worst_max, worst_mean = max(worst_max, diff.max().item()), max(worst_mean, diff.mean().item())
        if im.size == (672, 672):
            assert diff[1:].max().item() < 1e-5  # the tiles need no resize: identical
    assert worst_max <= MAX_TOL and worst_mean <= MEAN_TOL, (worst_max, worst_mean)


def test_grouped_hf_processing_equals_one_at_a_time():
    """Evaluation runs the real processor with same-size images grouped into one resize call;
    every image's values equal HF's default per-image processing on the CPU exactly."""
    from transformers import LlavaNextImageProcessor, Qwen2VLImageProcessor, SiglipImageProcessor

    from mmsafety.models.pixels import run_image_processor

    images = varied_images()
    images += [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]  # each size twice
    for hf in [dict(processors())["clip-torchvision"], SiglipImageProcessor(size={"height": 32, "width": 32}),
               Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224),
               LlavaNextImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                       image_grid_pinpoints=[[64, 128], [128, 64], [128, 128]])]:
        grouped = run_image_processor(hf, images)
        assert hf.backend == "torchvision"
        for key, value in hf(images, return_tensors="pt").items():
            assert torch.equal(grouped[key], value), (type(hf).__name__, key)
    from transformers import Idefics3ImageProcessor  # one image per sample, tiles padded per batch

    hf = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    grouped = run_image_processor(hf, images, one_per_sample=True)
    for key, value in hf([[im] for im in images], return_tensors="pt").items():
        assert torch.equal(grouped[key], value), ("Idefics3ImageProcessor", key)


@pytest.mark.parametrize("longest,tile", [(64, 32), (1456, 364)])
def test_idefics3_split_matches_hf_processor(longest, tile):
    """Idefics3: longest-edge resize, rounding up to tile multiples, tiles in reading order and the
    global image, against Idefics3ImageProcessor (Lanczos): same grid, same tolerance; at the attack
    resolution the tiles are exact crops."""
    from transformers import Idefics3ImageProcessor

    from mmsafety.models.idefics3 import SplitPreprocess

    hf = Idefics3ImageProcessor(size={"longest_edge": longest}, max_image_size={"longest_edge": tile},
                                image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ours = SplitPreprocess((longest, longest), longest, tile, (0.5,) * 3, (0.5,) * 3)
    worst_max, worst_mean = 0.0, 0.0
    for im in varied_images() + [Image.new("RGB", (longest, longest), (10, 200, 30))]:
        expected = hf([[im]], return_tensors="pt", return_row_col_info=True)
        got, rows, cols = ours(pil_to_pixels(im)[None])
        assert (rows, cols) == (expected["rows"][0][0], expected["cols"][0][0]), im.size
        assert got.shape == expected["pixel_values"].shape, im.size
        diff = (got - expected["pixel_values"]).abs()
        worst_max, worst_mean = max(worst_max, diff.max().item()), max(worst_mean, diff.mean().item())
        if im.size == (longest, longest):
            assert diff[0, :-1].max().item() < 1e-5  # the tiles need no resize: identical
    assert worst_max <= MAX_TOL and worst_mean <= MEAN_TOL, (worst_max, worst_mean)
