"""placement.gradient_checkpointing and placement.compile: the same losses, gradients, scores and
answers as plain eager execution, and each option really changes how the model runs."""

from __future__ import annotations

import pytest
import torch

from mmsafety.app import load_preset
from tests.helpers import builder_presets, load_builtin

PROMPTS = ["Describe the image.", "What is in the picture? Answer in one word."]
TARGETS = ["Sure, here it is", "ok"]
FAMILIES = sorted(b for b in builder_presets() if b.startswith("tiny_"))  # every tiny preset in conf/model


def loss_and_grad(adapter, pixels):
    x = pixels.clone().requires_grad_(True)
    loss = adapter.target_loss(x, PROMPTS, TARGETS)
    grad, = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def saved_for_backward_bytes(adapter, pixels) -> int:
    """Bytes autograd is handed to keep for the backward during one target_loss forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adapter.target_loss(pixels.clone().requires_grad_(True), PROMPTS, TARGETS)
    return total


@pytest.mark.parametrize("builder", FAMILIES)
def test_checkpointing_gives_the_same_gradients_and_keeps_less(builder):
    plain, recomputed = load_builtin(builder), load_builtin(builder, gradient_checkpointing=True)
    pixels = torch.rand(len(PROMPTS), 3, *plain.input_size, generator=torch.Generator().manual_seed(0))
    loss, grad = loss_and_grad(plain, pixels)
    loss_ckpt, grad_ckpt = loss_and_grad(recomputed, pixels)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_ckpt, grad, rtol=1e-5, atol=1e-9)
    assert grad.abs().max() > 0
    # Checkpointed layers keep only their inputs; measured 2-26x less across these families.
    assert saved_for_backward_bytes(recomputed, pixels) < 0.6 * saved_for_backward_bytes(plain, pixels)


@pytest.mark.parametrize("builder", ["tiny_llava", "tiny_qwen2_vl", "tiny_idefics3", "tiny_blip2"])
def test_checkpointing_leaves_inference_alone(builder):
    """A checkpointed transformers layer drops its KV cache; generation and cached choice scoring
    (which keep one) must not see checkpointing at all."""
    plain, recomputed = load_builtin(builder), load_builtin(builder, gradient_checkpointing=True)
    pixels = torch.rand(len(PROMPTS), 3, *plain.input_size, generator=torch.Generator().manual_seed(1))
    choices = ["Yes", "No", "Maybe not"]
    loss_and_grad(recomputed, pixels)  # an attack step first, as in an attack's held-out checks
    torch.testing.assert_close(recomputed.choice_logprobs(pixels, PROMPTS, choices),
                               plain.choice_logprobs(pixels, PROMPTS, choices))
    assert recomputed.generate(pixels, PROMPTS, 12) == plain.generate(pixels, PROMPTS, 12)
    assert all(not layer.training for layer in recomputed._recomputed)  # only on during target_loss


def test_checkpointing_recomputes_each_layer_in_the_backward():
    adapter = load_builtin("tiny_llava", gradient_checkpointing=True)
    calls = []
    # A pre-hook: the recompute stops as soon as it has what the backward needs (early stop).
    adapter.model.get_decoder().layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, *adapter.input_size, requires_grad=True)
    loss = adapter.target_loss(x, PROMPTS[:1], TARGETS[:1]).sum()
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # the backward ran the layer again


def test_placement_options_reach_the_adapter_from_the_config():
    adapter = load_preset("tiny_llava", "cpu", "placement.gradient_checkpointing=true")
    assert len(adapter._recomputed) == 4  # 2 vision + 2 language layers
    assert load_preset("tiny_llava", "cpu")._recomputed == []


@pytest.mark.slow
def test_compiled_model_gives_the_same_losses_gradients_scores_and_answers():
    """~40 s on 2 cores: compiling the gradient, scoring and generation graphs."""
    eager, compiled = load_builtin("tiny_llava"), load_builtin("tiny_llava", compile=True)
    assert hasattr(compiled.model.get_decoder(), "_compiled_call_impl")
    pixels = torch.rand(len(PROMPTS), 3, *eager.input_size, generator=torch.Generator().manual_seed(2))
    loss, grad = loss_and_grad(eager, pixels)
    loss_c, grad_c = loss_and_grad(compiled, pixels)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_c, grad, rtol=1e-4, atol=1e-7)
    # A batch of another size and prompt length: dynamic shapes, still equal.
    longer = PROMPTS + ["A much longer prompt, with quite a few more tokens than the other two have."]
    three = torch.rand(3, 3, *eager.input_size, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(compiled.target_loss(three, longer, TARGETS + ["x"]),
                               eager.target_loss(three, longer, TARGETS + ["x"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.choice_logprobs(pixels, PROMPTS, ["Yes", "No"]),
                               eager.choice_logprobs(pixels, PROMPTS, ["Yes", "No"]), rtol=1e-5, atol=1e-5)
    assert compiled.generate(pixels, PROMPTS, 8) == eager.generate(pixels, PROMPTS, 8)
