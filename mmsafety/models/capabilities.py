"""What a model can do, by name. Workloads and attack stages declare what they need, and a
mismatch is refused in one line before any model loads.

| capability      | method(s) the adapter provides                                                  |
|-----------------|----------------------------------------------------------------------------------|
| generate        | generate(images, prompts, max_new_tokens) -> list[str]                           |
| score_choices   | choice_logprobs(images, prompts, choices) -> float32 [B, len(choices)]          |
| pixel_loss      | target_loss(pixels, prompts, targets) -> [B], differentiable w.r.t. pixels;     |
|                 | to_input_pixels(images), input_size, preprocess                                 |
| embed           | embeds images and texts (open_clip): scored through choice_logprobs/target_loss |

An adapter class declares `capabilities: ClassVar[frozenset[str]]` and implements exactly those
methods (no method that only raises). A served model (OpenAI-compatible API) generates and, when
its server returns logprobs, scores choices; it never takes a gradient.
"""

from __future__ import annotations

from typing import Iterable

from mmsafety.errors import ConfigError

GENERATE = "generate"
SCORE_CHOICES = "score_choices"
PIXEL_LOSS = "pixel_loss"
EMBED = "embed"
ALL = frozenset({GENERATE, SCORE_CHOICES, PIXEL_LOSS, EMBED})

WHY = {
    GENERATE: "writes text answers",
    SCORE_CHOICES: "scores fixed answers such as Yes/No",
    PIXEL_LOSS: "gives a loss differentiable with respect to the image pixels (white-box attacks)",
    EMBED: "embeds images and text",
}


def capabilities_of(model_or_class) -> frozenset[str]:
    return frozenset(getattr(model_or_class, "capabilities", frozenset()))


def missing(model_or_class, needed: Iterable[str]) -> list[str]:
    have = capabilities_of(model_or_class)
    return [c for c in needed if c not in have]


def require(model_or_class, needed: Iterable[str], what: str, model_name: str | None = None) -> None:
    """Raise ConfigError in one line when `model_or_class` lacks any capability in `needed`.

    `what` says who needs it ("the GOAT eval with scoring=logprob", "the craft stage").
    """
    gaps = missing(model_or_class, needed)
    if gaps:
        name = model_name or getattr(model_or_class, "name", type(model_or_class).__name__)
        has = ", ".join(sorted(capabilities_of(model_or_class))) or "nothing"
        need = "; ".join(f"{c} ({WHY.get(c, c)})" for c in gaps)
        raise ConfigError(f"{what} needs a model that can {need}; {name} can only: {has}")
