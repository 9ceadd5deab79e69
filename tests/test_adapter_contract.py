"""One contract test, parametrised over every registered adapter and the tiny presets that build
each (open_clip style golden tests). The families come from conf/model/tiny_*.yaml and the
registry: adding a family adds its cases here with no edit to this file."""

from __future__ import annotations

import random

import pytest
import torch

from mmsafety.errors import UserError
from mmsafety.models.base import Generates
from mmsafety.models.capabilities import ALL, GENERATE, PIXEL_LOSS, SCORE_CHOICES
from mmsafety.models.registry import ADAPTERS, adapter_class, adapter_names
from mmsafety.synthetic import scenes
from tests.helpers import builder_presets, load_builtin

# Every tiny preset (conf/model/tiny_*.yaml): one per registered family, some families serve more
# than one model class (Qwen2 / Qwen2.5-VL, InstructBLIP / BLIP-2).
TINY = sorted(b for b in builder_presets() if b.startswith("tiny_"))
FAMILIES = sorted(builder_presets().values())


def capable(*needed):
    """The tiny presets whose adapter has every capability in `needed`."""
    return [b for b in TINY if set(needed) <= adapter_class(builder_presets()[b]).capabilities]


def test_every_registered_adapter_has_a_tiny_preset():
    # Served models have no weights here: tests/test_served_*.py test them against mmsafety-serve.
    # Text-only models (causal_lm, judge classifiers) read no images: tests/test_harmbench_served_judge.py.
    local = {n for n in adapter_names() if not getattr(adapter_class(n), "takes_model_config", False)
             and not getattr(adapter_class(n), "text_only", False)}
    assert local == {builder_presets()[b] for b in TINY}


@pytest.mark.parametrize("name", sorted(adapter_names()))
def test_capabilities_are_declared_and_implemented(name):
    """What a class says it can do is what it implements: no method that only raises."""
    cls = adapter_class(name)
    assert cls.capabilities and cls.capabilities <= ALL and not cls.__abstractmethods__
    assert (GENERATE in cls.capabilities) == hasattr(cls, "generate") == issubclass(cls, Generates)
    assert (SCORE_CHOICES in cls.capabilities) == hasattr(cls, "choice_logprobs")
    assert (PIXEL_LOSS in cls.capabilities) == hasattr(cls, "target_loss")
    assert ADAPTERS.get(name).name == name


@pytest.fixture(scope="module", params=TINY)
def adapter(request):
    return load_builtin(request.param)


def _inputs(n=3, seed=0):
    rng = random.Random(seed)
    images = [scenes.make_scene(rng, envelope=i % 2 == 1, size=rng.choice([48, 64, 90])).image for i in range(n)]
    prompts = ["What colour is the shape?", "Describe this image in a few words please.", "Hi"][:n]
    return images, prompts


def test_attributes(adapter):
    assert len(adapter.input_size) == 2 and all(s > 0 for s in adapter.input_size)
    assert adapter.device.type == "cpu" and adapter.dtype == torch.float32
    assert len(adapter.weights_sha256) == 64


@pytest.mark.parametrize("builder", capable(GENERATE))
def test_generate_batched_equals_unbatched(builder):
    adapter = load_builtin(builder)
    images, prompts = _inputs()
    batched = adapter.generate(images, prompts, max_new_tokens=8)
    single = [adapter.generate([im], [p], max_new_tokens=8)[0] for im, p in zip(images, prompts)]
    assert batched == single
    assert all(isinstance(s, str) for s in batched)


def test_choice_logprobs(adapter):
    images, prompts = _inputs()
    lp = adapter.choice_logprobs(images, prompts, ["Yes", "No", "Maybe not"])
    assert lp.shape == (3, 3) and lp.dtype == torch.float32
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    single = torch.cat([adapter.choice_logprobs([im], [p], ["Yes", "No", "Maybe not"]) for im, p in zip(images, prompts)])
    torch.testing.assert_close(lp, single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("builder", ["organism", "tiny_llava_next", "tiny_idefics3"])
@pytest.mark.parametrize("choices", [["Yes", "No"], ["Yes", "No", "Maybe not", "red"]])
def test_cached_choice_scoring_equals_appended_scoring(builder, choices):
    """One prompt forward plus per-choice continuations gives the numbers of full appended sequences
    (LLaVA-NeXT and Idefics3: images of different sizes, so different image token counts, in one batch). With
    Yes/No the longest choice rides along with the prompt forward and no cache is kept; with four
    choices the others continue from the cache."""
    adapter = load_builtin(builder)
    images, prompts = _inputs()
    assert any(len(adapter.answer_ids(c)) > 1 for c in choices)  # multi-token choices use the cache
    torch.testing.assert_close(adapter.choice_logprobs(images, prompts, choices),
                               adapter.appended_logprobs(images, prompts, choices), atol=1e-4, rtol=1e-4)


def test_target_loss_is_differentiable_in_pixels(adapter):
    images, prompts = _inputs()
    pixels = adapter.to_input_pixels(images)
    assert pixels.shape == (3, 3, *adapter.input_size) and 0 <= pixels.min() and pixels.max() <= 1
    pixels.requires_grad_(True)
    targets = ["red", scenes.SEND_EMAIL_CALL, "blue"]
    loss = adapter.target_loss(pixels, prompts, targets)
    assert loss.shape == (3,) and loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    grad = pixels.grad
    assert torch.isfinite(grad).all()
    assert (grad.flatten(1).abs().sum(1) > 0).all(), "every example's loss must depend on its own pixels"
    single = torch.cat([adapter.target_loss(pixels[i:i + 1].detach(), [p], [t]) for i, (p, t) in enumerate(zip(prompts, targets))])
    torch.testing.assert_close(loss.detach(), single, atol=1e-4, rtol=1e-4)
    assert not any(p.requires_grad for p in adapter.model.parameters()), "model weights must be frozen"


def test_tensor_and_pil_paths_agree(adapter):
    """A float image at input size, saved as 8 bits, scores the same through both paths."""
    images, prompts = _inputs()
    pixels = adapter.to_input_pixels(images).mul(255).round().div(255)
    from mmsafety.models.pixels import pixels_to_pil

    pil = [pixels_to_pil(p) for p in pixels]
    torch.testing.assert_close(adapter.choice_logprobs(pixels, prompts, ["Yes", "No"]),
                               adapter.choice_logprobs(pil, prompts, ["Yes", "No"]), atol=2e-3, rtol=1e-3)


def test_short_pgd_lowers_the_target_loss(adapter):
    """Every family can be attacked: 20 PGD steps at 16/255 lower the loss of a target string."""
    from visual_attacks.pgd import PGDConfig, pgd

    images, prompts = _inputs(2)
    clean = adapter.to_input_pixels(images)
    targets = [scenes.SEND_EMAIL_CALL] * 2
    result = pgd(lambda px, step: adapter.target_loss(px, prompts, targets), clean,
                 PGDConfig(eps=16 / 255, step_size=2 / 255, steps=20))
    assert (result.best_loss < result.losses[0] - 1e-3).all(), (result.losses[0], result.best_loss)
    assert (result.pixels - clean).abs().max() <= 16 / 255 + 1e-6


@pytest.mark.parametrize("builder", capable(GENERATE))
def test_prompt_tokens_match_the_real_processor(builder):
    """The adapter's cached prompt tokens (image placeholders expanded) equal what the family's own
    processor produces for the same image and prompt."""
    adapter = load_builtin(builder)
    image = scenes.scenes(0, 1)[0].image.resize(adapter.input_size[::-1])
    prompt = "What colour is the shape?"
    proc = adapter.processor
    if builder == "tiny_paligemma":
        expected = proc(images=[image], text=["<image>" + prompt], return_tensors="pt")["input_ids"][0].tolist()
        ours = adapter.prompt_ids(prompt)
    elif "blip" in builder:  # no chat template: query placeholders, <s>, the bare prompt
        inputs = proc(images=[image], text=[prompt], return_tensors="pt")
        expected, ours = inputs["input_ids"][0].tolist(), adapter.prompt_ids(prompt)
        if builder == "tiny_instructblip":  # and the Q-Former's own WordPiece tokens of the prompt
            qformer = adapter._qformer_text([prompt])
            assert qformer["qformer_input_ids"].tolist() == inputs["qformer_input_ids"].tolist()
            assert proc.qformer_tokenizer.convert_ids_to_tokens(qformer["qformer_input_ids"][0])[0] == "[CLS]"
    else:
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = proc.apply_chat_template(chat, add_generation_prompt=True)
        inputs = proc(images=[image], text=[text], return_tensors="pt")
        expected = inputs["input_ids"][0].tolist()
        ours = (adapter.prompt_ids(prompt, int(inputs["image_grid_thw"].prod()) // adapter.merge_area)
                if builder.startswith("tiny_qwen") else adapter.prompt_ids(prompt))
        if builder == "tiny_idefics3":  # and an image of another shape: another grid of tiles
            wide = image.resize((adapter.input_size[1], adapter.input_size[0] // 2))
            _, grids = adapter.vision_inputs([wide])
            assert grids == [(1, 2)]
            assert adapter.prompt_ids(prompt, grids[0]) == proc(images=[wide], text=[text])["input_ids"][0]
    assert ours == expected


def test_blip_snapshot_without_image_placeholders_is_refused_in_one_line():
    from mmsafety.models.blip import BlipAdapter
    from mmsafety.placement import resolve_placement

    adapter = load_builtin("tiny_blip2")
    adapter.model.config.image_token_id = None
    try:
        with pytest.raises(UserError, match="predates BLIP's <image> placeholders"):
            BlipAdapter(adapter.model, adapter.processor, resolve_placement("cpu", "float32"), "old/blip2", "0" * 64)
    finally:
        adapter.model.config.image_token_id = adapter.image_token_id
