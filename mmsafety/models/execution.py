"""How a loaded model runs its attack steps: activation checkpointing and torch.compile, both
off by default (`placement.gradient_checkpointing`, `placement.compile`).

- Checkpointing keeps only each layer's input during the forward and recomputes the layer in
  the backward: less activation memory (more prompts per step on a given card), a slower step.
- Compiling the language model fuses its small elementwise ops: a faster step once compiled,
  after a compile of tens of seconds. `bench/execution_options.py` measures both.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def apply_execution_options(model, placement) -> list[torch.nn.Module]:
    """Apply `placement.gradient_checkpointing` and `placement.compile` to a loaded model; returns
    the layers for `recomputing` (empty unless checkpointing transformers layers)."""
    layers = checkpointed_layers(model) if placement.gradient_checkpointing else []
    if placement.compile:
        compile_model(model)
    return layers


def checkpointed_layers(model) -> list[torch.nn.Module]:
    """Turn on activation checkpointing for every transformer layer of `model`; returns the layers.

    transformers checkpoints a layer only while the layer is in training mode, and our models
    stay in eval mode (no dropout). `recomputing(layers)` flips the flag on those layers alone,
    and only around a gradient computation: inference keeps its KV cache, which a checkpointed
    layer would drop."""
    # heavy, deferred to when this runs: transformers
    from transformers.modeling_layers import GradientCheckpointingLayer

    if hasattr(model, "set_grad_checkpointing"):  # open_clip: checkpoints in eval mode as well
        model.set_grad_checkpointing(True)
        return []
    model.activation_checkpointing_enable({"use_reentrant": False})
    if getattr(model, "_require_grads_hook", None) is not None:
        # Made for fine-tuning (gradients through frozen embeddings); pixel gradients don't need it.
        model.disable_input_require_grads()
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


@contextmanager
def recomputing(layers: list[torch.nn.Module]):
    """Within the block, `layers` recompute their activations in the backward (see above)."""
    for layer in layers:
        layer.training = True  # the layer's own flag only: its dropout children stay in eval mode
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def compile_model(model) -> None:
    """torch.compile where the compute is: a VLM's language model, an open_clip model's image
    tower. Dynamic shapes: prompt batches differ in length from step to step and must not
    recompile each time."""
    if not hasattr(model, "get_decoder"):
        model.visual.compile(dynamic=True)  # open_clip
        return
    decoder = model.get_decoder()
    # BLIP-2 keeps a whole ForCausalLM as its language model; the adapters call its inner model.
    while decoder.get_decoder() is not decoder:
        decoder = decoder.get_decoder()
    decoder.compile(dynamic=True)
