"""The one interface every VLM implements. The rest of mmsafety talks to models only through it."""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence, Union

import torch
from PIL import Image

from mmsafety.models.pixels import ClipStylePreprocess, stack_pil

# A target is a string, or weighted segments [(text, weight), ...] concatenated in order;
# the loss is then sum over segments of weight * (mean NLL of that segment's tokens); or a
# sequences.TokenWeightedTarget (Fu et al.'s token-count-weighted mean, optional EOS).
Target = Union[str, Sequence[tuple[str, float]]]

# PIL images go through the model's real (non-differentiable) processor: that is how a
# saved adversarial PNG is judged. A float tensor [B,3,H,W] in [0,1] at `input_size` goes
# through the adapter's differentiable re-implementation: that is what attacks optimise.
Images = Union[Sequence[Image.Image], torch.Tensor]


class VLMAdapter(abc.ABC):
    """A vision-language model behind a small, batched, differentiable contract.

    Attributes:
        input_size: (H, W) of the pixel tensors that `target_loss` takes.
        device, dtype: where the weights live and their precision. Losses come back in fp32.
        model_id: the name or path it was loaded from; weights_sha256: fingerprint of its weights.
    """

    name: ClassVar[str]
    supports_generation: ClassVar[bool] = True

    input_size: tuple[int, int]
    device: torch.device
    dtype: torch.dtype
    model_id: str
    weights_sha256: str

    @abc.abstractmethod
    def generate(self, images: Images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """Greedy answers, one per (image, prompt) pair, chat template applied. Batched."""

    @abc.abstractmethod
    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """log p(choice | image, prompt) for each fixed answer: float32 [B, len(choices)], without
        generating (one pass over the prompt, plus the choices' own tokens)."""

    @abc.abstractmethod
    def target_loss(self, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[Target]) -> torch.Tensor:
        """Per-example loss [B] (fp32) of producing `targets`; differentiable w.r.t. `pixels` [B,3,H,W] in [0,1].

        For a language model: the mean token NLL of the target after the prompt (weighted per
        segment when a target is given as segments)."""

    # The adapter's differentiable re-implementation of its processor (resize/crop/normalise).
    preprocess: ClipStylePreprocess

    def to_input_pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any size -> [B,3,H,W] in [0,1] at `input_size` (the attack's starting point)."""
        return stack_pil(images, self.preprocess)
