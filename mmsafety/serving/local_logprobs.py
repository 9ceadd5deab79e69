"""Greedy answers of a local transformers adapter together with each generated token's
log-probabilities, which the VLMAdapter contract does not expose.

Every transformers adapter generates through `self.model.generate(...)` and decodes the returned
token ids. For one call, the model's `generate` is wrapped to also return the raw logits of each
step (`output_logits=True`) and the prompt lengths: the adapter's own prompt building, image
processing and decoding stay exactly what `generate` does, with no family-specific code here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import torch

_WRAP_LOCK = threading.Lock()  # one wrapped call at a time per process (the wrapper is per model object)


@dataclass
class GeneratedToken:
    token: str
    logprob: float
    top: list[tuple[str, float]]  # the most likely tokens at this step, best first


@dataclass
class Generation:
    text: str
    tokens: list[GeneratedToken]  # empty when logprobs were not asked for
    prompt_tokens: int
    completion_tokens: int
    finished: bool  # ended with the end-of-sequence token (finish_reason "stop"), else "length"


def can_report_logprobs(adapter) -> bool:
    return hasattr(getattr(adapter, "model", None), "generate") and hasattr(adapter, "tokenizer")


def generate_with_logprobs(adapter, images, prompts: Sequence[str], max_new_tokens: int,
                           top_logprobs: int | None) -> list[Generation]:
    """`adapter.generate(images, prompts, max_new_tokens)` plus, per generated token, its
    log-probability and the `top_logprobs` best alternatives (None: skip the logprobs)."""
    if not can_report_logprobs(adapter):
        texts = adapter.generate(images, prompts, max_new_tokens=max_new_tokens)
        return [Generation(t, [], 0, 0, True) for t in texts]
    model, tok = adapter.model, adapter.tokenizer
    captured: dict = {}
    original = model.generate

    def generate_and_keep_logits(*args, **kwargs):
        out = original(*args, **kwargs, output_logits=True, return_dict_in_generate=True)
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids")
        captured["prompt_tokens"] = (mask.sum(1).tolist() if mask is not None
                                     else [ids.shape[1]] * ids.shape[0] if ids is not None else None)
        captured["steps"] = len(out.logits)
        captured["sequences"] = out.sequences[:, out.sequences.shape[1] - len(out.logits):]
        captured["logits"] = out.logits
        return out.sequences

    with _WRAP_LOCK:
        model.generate = generate_and_keep_logits
        try:
            texts = adapter.generate(images, prompts, max_new_tokens=max_new_tokens)
        finally:
            del model.generate  # the instance attribute; the class's method shows through again
    new_ids = captured["sequences"].cpu()
    eos = tok.eos_token_id
    logprobs = [torch.log_softmax(step.float(), dim=-1).cpu() for step in captured["logits"]] if top_logprobs is not None else []
    out = []
    for b, text in enumerate(texts):
        row = new_ids[b].tolist()
        length = row.index(eos) + 1 if eos in row else len(row)
        tokens = []
        for t in range(length if top_logprobs is not None else 0):
            lp = logprobs[t][b]
            token_id = row[t]
            best = torch.topk(lp, k=max(1, top_logprobs)).indices.tolist() if top_logprobs else []
            tokens.append(GeneratedToken(tok.decode([token_id]), lp[token_id].item(),
                                         [(tok.decode([i]), lp[i].item()) for i in best]))
        prompt_tokens = captured["prompt_tokens"][b] if captured.get("prompt_tokens") else 0
        out.append(Generation(text, tokens, int(prompt_tokens), length, eos in row))
    return out
