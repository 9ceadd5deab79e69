"""How many tokens a model can attend to, and whether a prompt fits, before it reaches the model.

A prompt that does not fit is refused with both lengths, never truncated: a truncated meme
caption is a different benchmark item, and an untruncated one far past the context asks the
forward for memory it cannot have (a 200,000-word caption wanted 160 GB).
"""

from __future__ import annotations

from typing import Sequence

# Tokenizers without a real limit report this sentinel (int(1e30)) or similar.
_NO_LIMIT = 10 ** 9


def context_length(adapter) -> int | None:
    """Positions the language model was built for (config `max_position_embeddings`, else the
    tokenizer's `model_max_length`); None when neither says."""
    config = getattr(getattr(adapter, "model", None), "config", None)
    for part in (getattr(config, "text_config", None), config):
        value = getattr(part, "max_position_embeddings", None)
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            return value
    value = getattr(getattr(adapter, "tokenizer", None), "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < _NO_LIMIT else None


def prompt_length(adapter, prompt: str) -> int | None:
    """Tokens of the chat-templated prompt with its image placeholders expanded at the attack
    resolution (the adapter's own `prompt_ids`, cached there for the forward); None when the
    adapter cannot say (open_clip)."""
    ids = getattr(adapter, "prompt_ids", None)
    if ids is None:
        return None
    try:
        return len(ids(prompt))
    except TypeError:  # Qwen2-VL: the count depends on the image; take the attack resolution's
        pre = adapter.preprocess
        h, w = adapter.input_size
        return len(ids(prompt, (h // pre.patch) * (w // pre.patch) // (pre.merge ** 2)))


def answer_length(adapter, answers: Sequence[str]) -> int:
    """Tokens of the longest fixed answer (scored after the prompt)."""
    return max((len(adapter.answer_ids(a)) for a in answers), default=0) if hasattr(adapter, "answer_ids") else 0


def too_long(adapter, prompt: str, answer_tokens: int) -> str | None:
    """Why `prompt` plus `answer_tokens` cannot fit the model's context, or None if it can (or the
    adapter cannot say)."""
    limit = context_length(adapter)
    if limit is None:
        return None
    length = prompt_length(adapter, prompt)
    if length is None or length + answer_tokens <= limit:
        return None
    return (f"prompt too long for the model: {length} tokens (image included) + {answer_tokens} for the answer "
            f"> context of {limit}; not truncated, since a cut caption is a different item")
