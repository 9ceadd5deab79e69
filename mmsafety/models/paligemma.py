"""PaliGemma family (PaliGemmaForConditionalGeneration): SigLIP tower, Gemma LM, prefix-LM attention.

The prefix is `<image>` x image_seq_length, `<bos>`, the prompt and a newline; it is attended
bidirectionally (token type 0), the answer causally (token type 1). The processor squashes
every image to the model's square resolution (224 for paligemma-3b-*-224) without cropping,
which is also the attack resolution: a saved PNG of that size needs no resize.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmsafety.models.base import Images
from mmsafety.models.hf_adapter import HFVLMAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import SquashPreprocess, processed_pixels
from mmsafety.models.registry import register_adapter
from mmsafety.models.sequences import (
    pad_batch, prompt_target_batch, token_nll,
)
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder


@register_adapter("paligemma")
class PaliGemmaAdapter(HFVLMAdapter):
    """google/paligemma-* checkpoints and the tiny model built like them."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        super().__init__(model, processor, placement, model_id, weights_hash)
        ip = processor.image_processor
        self.input_size = (int(ip.size["height"]), int(ip.size["width"]))
        self.preprocess = SquashPreprocess(self.input_size, tuple(ip.image_mean), tuple(ip.image_std))
        self._prefix = processor.image_token * processor.image_seq_length + self.tokenizer.bos_token

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "PaliGemmaAdapter":
        model, processor, weights_hash = load_hf_vlm("PaliGemmaForConditionalGeneration", source, opts, placement)
        return cls(model, processor, placement, source, weights_hash)

    # -- tokens ------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """The prefix the processor builds (image tokens, <bos>, prompt, newline), tokenised once."""
        return self._prompts_cache.get(
            prompt, lambda: self.tokenizer(self._prefix + prompt + "\n", add_special_tokens=False)["input_ids"])

    def pixel_values(self, images: Images) -> torch.Tensor:
        return processed_pixels(images, self.preprocess, self.processor.image_processor, self.device, self.dtype)

    # -- the contract ------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        ids, mask = pad_batch([self.prompt_ids(p) for p in prompts], self.pad_id, side="left")
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                                  pixel_values=self.pixel_values(images), max_new_tokens=max_new_tokens,
                                  **self.decoding, pad_token_id=self.pad_id)
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def target_nll(self, images, prompts, target_ids, repeat=1):
        pixel_values = self.pixel_values(images).repeat_interleave(repeat, dim=0)
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        ids, mask, labels = prompt_target_batch(prompt_ids, target_ids, self.pad_id)
        # Prefix (token type 0) attends both ways; the answer and the padding after it are type 1.
        types = torch.ones_like(ids)
        for row, p in enumerate(prompt_ids):
            types[row, :len(p)] = 0
        return token_nll(self.model, ids.to(self.device), mask.to(self.device), labels.to(self.device),
                         pixel_values=pixel_values, token_type_ids=types.to(self.device))

    # Choices are scored appended (the base class): the prefix attends both ways, so it is scored with its answer.


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_paligemma", "mmsafety.organisms.tiny_paligemma", "build_tiny_paligemma", 1, "random-init tiny PaliGemma (32x32, 16 image tokens)")
