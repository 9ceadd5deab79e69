"""The adapter contract, split by capability (see mmsafety.models.capabilities).

A model family's class derives from `ModelAdapter` plus one small base per thing it can do,
and implements exactly those methods: no method that only raises.

| base              | capability     | methods                                                            |
|-------------------|----------------|--------------------------------------------------------------------|
| `Generates`       | generate       | generate(images, prompts, max_new_tokens) -> list[str]             |
| `ScoresChoices`   | score_choices  | choice_logprobs(images, prompts, choices) -> float32 [B, C]        |
| `PixelLoss`       | pixel_loss     | target_loss(pixels, prompts, targets) -> [B]; to_input_pixels      |
| `Embeds`          | embed          | (a marker: target_loss is an embedding distance, choices are ranked by similarity) |

`VLMAdapter` is the full local vision-language model (generate + score_choices + pixel_loss):
every transformers family. open_clip is `ModelAdapter + Embeds + ScoresChoices + PixelLoss`;
a served API model would be `ModelAdapter + Generates + ScoresChoices`.

A class's `capabilities` follow from these bases (set in `__init_subclass__`), so what a class
says it can do and what it implements cannot disagree; `require()` reads them from the class
before any weights load.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence, Union

import torch
from PIL import Image

from mmsafety.models.capabilities import EMBED, GENERATE, PIXEL_LOSS, SCORE_CHOICES
from mmsafety.models.pixels import ClipStylePreprocess, stack_pil

# A target is a string, or weighted segments [(text, weight), ...] concatenated in order;
# the loss is then sum over segments of weight * (mean NLL of that segment's tokens); or a
# sequences.TokenWeightedTarget (Fu et al.'s token-count-weighted mean, optional EOS).
Target = Union[str, Sequence[tuple[str, float]]]

# PIL images go through the model's real (non-differentiable) processor: that is how a
# saved adversarial PNG is judged. A float tensor [B,3,H,W] in [0,1] at `input_size` goes
# through the adapter's differentiable re-implementation: that is what attacks optimise.
Images = Union[Sequence[Image.Image], torch.Tensor]


class RawPrompt(str):
    """A prompt sent as it is, without the chat template, its `<image>` placeholder expanded; only
    adapters whose `raw_prompts` is True honour it (HarmBench's own LLaVA prompt format)."""


class ModelAdapter(abc.ABC):
    """What every model is: a registered name, what it can do, where it came from.

    Attributes:
        name: the registry name (set by `register_adapter`).
        capabilities: what it can do, from its capability bases.
        device, dtype: where the weights live and their precision. Losses come back in fp32.
        model_id: the name or path it was loaded from; weights_sha256: fingerprint of its weights.
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # Set on each capability base below: the capability that base adds.
    provides: ClassVar[str | None] = None

    device: torch.device
    dtype: torch.dtype
    model_id: str
    weights_sha256: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "provides" in cls.__dict__:
            return  # a capability base itself
        cls.capabilities = frozenset(c.__dict__["provides"] for c in cls.__mro__
                                     if c.__dict__.get("provides") is not None)

    @classmethod
    @abc.abstractmethod
    def load(cls, source: str, opts, placement) -> "ModelAdapter":
        """Load from a local folder or hub id (`opts`: mmsafety.models.loading.LoadOptions)."""


class Generates(ModelAdapter):
    provides = GENERATE

    @abc.abstractmethod
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """Greedy answers, one per (image, prompt) pair, chat template applied. Batched."""


class ScoresChoices(ModelAdapter):
    provides = SCORE_CHOICES

    @abc.abstractmethod
    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """log p(choice | image, prompt) for each fixed answer: float32 [B, len(choices)], without
        generating (one pass over the prompt, plus the choices' own tokens)."""


class PixelLoss(ModelAdapter):
    """A loss differentiable with respect to the pixels: what white-box attacks need.

    Attributes:
        input_size: (H, W) of the pixel tensors that `target_loss` takes.
        preprocess: the adapter's differentiable re-implementation of its processor (resize/crop/normalise).
    """

    provides = PIXEL_LOSS
    input_size: tuple[int, int]
    preprocess: ClipStylePreprocess

    @abc.abstractmethod
    def target_loss(self, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[Target]) -> torch.Tensor:
        """Per-example loss [B] (fp32) of producing `targets`; differentiable w.r.t. `pixels` [B,3,H,W] in [0,1].

        For a language model: the mean token NLL of the target after the prompt (weighted per
        segment when a target is given as segments)."""

    def to_input_pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any size -> [B,3,H,W] in [0,1] at `input_size` (the attack's starting point)."""
        return stack_pil(images, self.preprocess)


class Embeds(ModelAdapter):
    """Embeds images and text in one space (CLIP-style): `target_loss` is an embedding distance to
    the target text and `choice_logprobs` ranks choices by similarity, not token likelihoods."""

    provides = EMBED


class VLMAdapter(Generates, ScoresChoices, PixelLoss):
    """A local vision-language model behind a small, batched, differentiable contract: it generates,
    scores fixed choices and gives a token-NLL loss differentiable w.r.t. the pixels."""
