"""BLIP-2 and InstructBLIP (Blip2ForConditionalGeneration, InstructBlipForConditionalGeneration)
with a decoder-only language model (OPT, Vicuna).

Image path: BlipImageProcessor squashes every image to the vision tower's square (224 for the
Salesforce checkpoints, no crop), which is also the attack resolution: a saved PNG of that size
needs no resize. The Q-Former's learned queries cross-attend to the ViT patches; InstructBLIP's
queries also read the instruction, tokenised by the Q-Former's own (BERT WordPiece) tokenizer.
The projected query outputs fill `num_query_tokens` `<image>` placeholders that come before
`<s>` and the prompt. There is no chat template: the checkpoints were tuned on bare
instructions, and the answer follows the prompt directly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmsafety.errors import UserError
from mmsafety.models.base import Images
from mmsafety.models.hf_adapter import HFVLMAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import SquashPreprocess, processed_pixels
from mmsafety.models.registry import register_adapter
from mmsafety.models.sequences import (
    TokenCache, pad_batch, prompt_target_batch, token_nll,
)
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder

MODEL_CLASSES = {"instructblip": "InstructBlipForConditionalGeneration", "blip-2": "Blip2ForConditionalGeneration"}


@register_adapter("blip")
class BlipAdapter(HFVLMAdapter):
    """Salesforce/instructblip-vicuna-*, Salesforce/blip2-opt-* and the tiny models built like them."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        if not model.config.use_decoder_only_language_model:
            raise UserError(f"{model_id}: its language model is {model.config.text_config.model_type}, an "
                            "encoder-decoder; the blip adapter serves decoder-only ones (Vicuna, OPT checkpoints)")
        if model.config.image_token_id is None or getattr(processor, "num_query_tokens", None) is None:
            raise UserError(f"{model_id}: this snapshot predates BLIP's <image> placeholders (no image_token_index "
                            "in config.json or no num_query_tokens in processor_config.json); fetch the current revision")
        super().__init__(model, processor, placement, model_id, weights_hash)
        self.lm = model.language_model
        self.qformer_tokenizer = getattr(processor, "qformer_tokenizer", None)  # InstructBLIP only
        ip = processor.image_processor
        self.input_size = (int(ip.size["height"]), int(ip.size["width"]))
        self.preprocess = SquashPreprocess(self.input_size, tuple(ip.image_mean), tuple(ip.image_std))
        self.image_token_id = model.config.image_token_id
        self.query_tokens = model.config.num_query_tokens
        self._qformer_cache = TokenCache()

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "BlipAdapter":
        model, processor, weights_hash = load_hf_vlm(MODEL_CLASSES, source, opts, placement)
        return cls(model, processor, placement, source, weights_hash)

    # -- tokens ------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """What the processor builds: the query placeholders, then `<s>` and the prompt."""
        return self._prompts_cache.get(
            prompt, lambda: [self.image_token_id] * self.query_tokens + self.tokenizer(prompt)["input_ids"])

    def _qformer_text(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """InstructBLIP's Q-Former reads the instruction too ([CLS] prompt [SEP], right-padded:
        it attends both ways, so padding on the right with a mask is exact)."""
        if self.qformer_tokenizer is None:
            return {}
        limit = self.model.config.qformer_config.max_position_embeddings
        ids, mask = pad_batch([self._qformer_cache.get(p, lambda p=p: self.qformer_tokenizer(
            p, truncation=True, max_length=limit)["input_ids"]) for p in prompts], self.qformer_tokenizer.pad_token_id)
        return {"qformer_input_ids": ids.to(self.device), "qformer_attention_mask": mask.to(self.device)}

    # -- images ------------------------------------------------------------------------
    def pixel_values(self, images: Images) -> torch.Tensor:
        return processed_pixels(images, self.preprocess, self.processor.image_processor, self.device, self.dtype)

    def query_embeddings(self, images: Images, prompts: Sequence[str]) -> torch.Tensor:
        """[N, num_query_tokens, LM hidden]: what the LM reads in place of the placeholders."""
        return self.model.get_image_features(pixel_values=self.pixel_values(images), **self._qformer_text(prompts),
                                             return_dict=True).pooler_output

    def _embeds(self, ids: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(ids)
        placeholders = (ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(placeholders, queries.to(embeds.dtype))

    # -- the contract ------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        ids, mask = pad_batch([self.prompt_ids(p) for p in prompts], self.pad_id, side="left")
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.lm.generate(inputs_embeds=self._embeds(ids, self.query_embeddings(images, prompts)), input_ids=ids,
                               attention_mask=mask, max_new_tokens=max_new_tokens, **self.decoding,
                               pad_token_id=self.pad_id)
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def target_nll(self, images, prompts, target_ids, repeat=1):
        # The image and the Q-Former run once per image (each image's prompt is every repeat-th one).
        queries = self.query_embeddings(images, prompts[::repeat]).repeat_interleave(repeat, dim=0)
        ids, mask, labels = prompt_target_batch([self.prompt_ids(p) for p in prompts], target_ids, self.pad_id)
        ids = ids.to(self.device)
        return token_nll(self.lm, ids, mask.to(self.device), labels.to(self.device), inputs_embeds=self._embeds(ids, queries))

    # Choices are scored appended (the base class): the LM reads embeddings the adapter builds itself.


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_instructblip", "mmsafety.organisms.tiny_blip", "build_tiny_instructblip", 1, "random-init tiny InstructBLIP (32x32, 8 Q-Former queries)")
register_builder("tiny_blip2", "mmsafety.organisms.tiny_blip", "build_tiny_blip2", 1, "random-init tiny BLIP-2 (32x32, 8 Q-Former queries)")
