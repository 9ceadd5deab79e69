"""State and token helpers shared by the transformers-backed adapters."""

from __future__ import annotations

from mmsafety.models.base import VLMAdapter
from mmsafety.models.sequences import TokenCache
from mmsafety.placement import Placement


class HFVLMAdapter(VLMAdapter):
    """The frozen model, its processor and tokenizer, where it runs, what it is, its pad id and
    the token caches; families add their image inputs and prompt layout."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        self.model = model.eval().requires_grad_(False)  # attacks need pixel grads only
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.device, self.dtype = placement.device, placement.dtype
        self.model_id, self.weights_sha256 = model_id, weights_hash
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self._prompts_cache, self._answers_cache = TokenCache(), TokenCache()

    def answer_ids(self, text: str, eos: bool = False) -> list[int]:
        """Tokens of an answer or target text (cached: attacks ask for the same targets every step)."""
        ids = self._answers_cache.get(text, lambda: self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids + [self.tokenizer.eos_token_id] if eos else list(ids)
