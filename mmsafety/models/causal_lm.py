"""A text-only causal language model that generates: judge classifiers such as HarmBench's
(a Llama fine-tuned to answer Yes/No after a fixed prompt), local or behind `mmsafety-serve`.

The prompt is the model's whole input, tokenized as given with no chat template: a classifier's
prompt already holds its own format ([INST] ... [/INST]). It reads no images: `generate` takes
`images=None` (or a list of Nones, as the server's batcher passes), and `mmsafety-serve` accepts
requests without an image for it (`text_only`). Serve the HarmBench judge organism with

    mmsafety-serve --model organism model.adapter=causal_lm model.builder=harmbench_judge model.name=harmbench_judge
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from mmsafety.errors import ModelNotFound
from mmsafety.models.base import Generates
from mmsafety.models.loading import LoadOptions, resolve_checkpoint, weights_sha256
from mmsafety.models.registry import register_adapter
from mmsafety.placement import resolve_placement


def left_padded(tokenizer):
    """Set `tokenizer` up for greedy batches of raw prompts: padding and truncation on the left (an
    over-long prompt loses its start, never the answer slot), EOS as the pad token when it has none."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@register_adapter("causal_lm")
class CausalLMAdapter(Generates):
    """Greedy, left-padded batches of raw prompts through a transformers causal LM."""

    text_only: ClassVar[bool] = True

    def __init__(self, model, tokenizer, model_id: str, weights_sha256: str | None):
        self.model, self.tokenizer = model.eval(), tokenizer
        left_padded(self.tokenizer)
        self.model_id, self.weights_sha256 = model_id, weights_sha256
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype

    @classmethod
    def load(cls, source: str, opts=None, placement=None) -> "CausalLMAdapter":
        # heavy, deferred to when this runs: transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        opts = opts or LoadOptions()
        placement = placement or resolve_placement("cpu", "float32")
        where = resolve_checkpoint(source, opts)
        common = dict(revision=opts.revision, trust_remote_code=opts.trust_remote_code)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, **common)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=placement.dtype, use_safetensors=not opts.allow_pickle,
                                                         device_map=placement.device_map, **common)
        except OSError as e:
            raise ModelNotFound(f"could not load {source} from {where}: {str(e).splitlines()[0]}") from None
        if placement.device_map is None:
            model.to(placement.device)
        sha = weights_sha256(where) if not isinstance(where, str) else None
        return cls(model, tokenizer, str(source), sha)

    @torch.no_grad()
    def generate(self, images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """Greedy continuations of the prompts as given; `images` must be None or all None."""
        if images is not None and any(image is not None for image in images):
            raise ValueError("causal_lm is a text-only model: pass images=None")
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        ids = self.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
