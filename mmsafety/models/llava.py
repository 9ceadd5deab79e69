"""LLaVA-1.5 family (LlavaForConditionalGeneration): CLIP vision tower, projector, Llama-style LM."""

from __future__ import annotations

from typing import Sequence

import torch

from mmsafety.models.base import Images, RawPrompt
from mmsafety.models.hf_adapter import HFVLMAdapter
from mmsafety.models.loading import LoadOptions, load_hf_vlm
from mmsafety.models.pixels import ClipStylePreprocess, processed_pixels
from mmsafety.models.registry import register_adapter
from mmsafety.models.sequences import (
    cached_choice_logprobs, choice_variants, combine_variants, pad_batch, prompt_target_batch, repeat_rows, token_nll,
)
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder

@register_adapter("llava")
class LlavaAdapter(HFVLMAdapter):
    """llava-hf/llava-1.5-* checkpoints and the tiny/organism models built like them.

    The attack resolution is the processor's crop size (336 for llava-1.5, 64 for the
    tiny models). Pixels are CLIP-normalised inside the graph. A `RawPrompt` skips the chat template.
    """

    raw_prompts = True

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        super().__init__(model, processor, placement, model_id, weights_hash)
        self.preprocess = ClipStylePreprocess.from_hf(processor.image_processor)
        self.input_size = self.preprocess.crop
        patches = (self.input_size[0] // processor.patch_size) * (self.input_size[1] // processor.patch_size)
        extra = processor.num_additional_image_tokens - (1 if processor.vision_feature_select_strategy == "default" else 0)
        self.image_tokens = patches + extra

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "LlavaAdapter":
        model, processor, weights_hash = load_hf_vlm("LlavaForConditionalGeneration", source, opts, placement)
        return cls(model, processor, placement, source, weights_hash)

    # -- token handling ---------------------------------------------------------------
    def _render(self, prompt: str, image_tokens: int) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.chat_text(conversation)
        return text.replace(self.processor.image_token, self.processor.image_token * image_tokens)

    def _template_parts(self) -> tuple[str, str] | None:
        """(prefix, suffix) around the user text, when the chat template inserts it verbatim.

        Rendering Jinja for every unique meme prompt costs more than tokenising it; templates
        that transform the text (trim, escape) fail the check and keep the full render."""
        if not hasattr(self, "_parts"):
            marker = "\x00MMSAFETY\x00"
            prefix, _, suffix = self._render(marker, 1).partition(marker)
            probe = " Is this a probe?\n"
            self._parts = (prefix, suffix) if self._render(probe, 1) == prefix + probe + suffix else None
        return self._parts

    def prompt_ids(self, prompt: str, image_tokens: int | None = None) -> list[int]:
        """Chat-templated prompt with the image placeholder expanded to `image_tokens` (default:
        the count at the attack resolution), tokenised once and cached."""
        n = self.image_tokens if image_tokens is None else image_tokens
        return self._prompts([prompt], [n])[0]

    def _prompt_text(self, prompt: str, image_tokens: int) -> str:
        token = self.processor.image_token
        if isinstance(prompt, RawPrompt):
            return prompt.replace(token, token * image_tokens)
        parts = self._template_parts()
        return (parts[0].replace(token, token * image_tokens) + prompt + parts[1]) if parts else self._render(prompt, image_tokens)

    # -- pixels -----------------------------------------------------------------------

    def pixel_values(self, images: Images) -> torch.Tensor:
        return processed_pixels(images, self.preprocess, self.processor.image_processor, self.device, self.dtype)

    def vision_inputs(self, images: Images) -> dict[str, torch.Tensor]:
        """The model's image inputs, one entry per image along dim 0 (subclasses add image_sizes etc.)."""
        return {"pixel_values": self.pixel_values(images)}

    def image_token_counts(self, vision: dict[str, torch.Tensor]) -> list[int]:
        """Image placeholder tokens per image: fixed for LLaVA-1.5."""
        return [self.image_tokens] * len(next(iter(vision.values())))

    def _prompts(self, prompts: Sequence[str], counts: Sequence[int]) -> list[list[int]]:
        """`prompt_ids` of a batch, the uncached ones tokenised in one call."""
        # A raw prompt equals its text as a str: its key says it is raw, so the two never share tokens.
        return self._prompts_cache.get_many(
            [(p, n, isinstance(p, RawPrompt)) for p, n in zip(prompts, counts)],
            lambda keys: self.tokenizer([self._prompt_text(p, n) for p, n, _ in keys])["input_ids"])

    # -- the contract -----------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        vision = self.vision_inputs(images)
        ids, mask = pad_batch(self._prompts(prompts, self.image_token_counts(vision)), self.pad_id, side="left")
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **vision,
            max_new_tokens=max_new_tokens, **self.decoding, pad_token_id=self.pad_id,
        )
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    @torch.inference_mode()  # not just no_grad: no version counters, ~4 % faster on small models
    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """The prompts run once (`cached_choice_logprobs`); equal to `appended_logprobs` (tests check)."""
        vision = self.vision_inputs(images)
        prompt_ids = self._prompts(prompts, self.image_token_counts(vision))
        choice_ids, owners = choice_variants(choices, self.answer_ids)  # " Yes" and "Yes": log-sum-exp
        scores = cached_choice_logprobs(self.model, prompt_ids, choice_ids, self.pad_id, self.device, **vision)
        return combine_variants(scores, owners, len(choices))

    def target_nll(self, images, prompts, target_ids, repeat=1):
        vision = self.vision_inputs(images)
        counts = [k for k in self.image_token_counts(vision) for _ in range(repeat)]
        ids, mask, labels = prompt_target_batch(self._prompts(prompts, counts), target_ids, self.pad_id)
        return token_nll(self.model, ids.to(self.device), mask.to(self.device), labels.to(self.device),
                         **repeat_rows(vision, repeat))


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_llava", "mmsafety.organisms.tiny_llava", "build_tiny_llava", 1, "random-init tiny LLaVA (contract tests; ignores its image)")
