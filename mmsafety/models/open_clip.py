"""open_clip models as zero-shot scorers (CLIP, SigLIP, ...): they embed, they do not generate text.

- `choice_logprobs`: softmax over choices of image-text similarity, the text being
  "<prompt> <choice>" (the usual zero-shot classifier, scaled by the model's logit scale).
- `target_loss`: 1 - cosine(image embedding, embedding of the target text); the prompts
  are not used. This is the surrogate objective of transfer attacks (AttackVLM).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from mmsafety.errors import ModelNotFound
from mmsafety.models.base import Embeds, Images, PixelLoss, ScoresChoices, Target
from mmsafety.models.execution import apply_execution_options
from mmsafety.models.loading import LoadOptions, not_found, resolve_checkpoint, weights_sha256
from mmsafety.models.pixels import ClipStylePreprocess
from mmsafety.models.registry import register_adapter
from mmsafety.placement import Placement
from mmsafety.organisms.builders import register_builder


@register_adapter("open_clip")
class OpenClipAdapter(Embeds, ScoresChoices, PixelLoss):
    """Capabilities: embed, score_choices (zero-shot ranking), pixel_loss (embedding distance); no generate."""

    def __init__(self, model, tokenizer, preprocess: ClipStylePreprocess, real_transform, placement: Placement,
                 model_id: str, weights_hash: str):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess, self.real_transform = preprocess, real_transform
        self.input_size = preprocess.crop
        self.device, self.dtype = placement.device, placement.dtype
        self.model_id, self.weights_sha256 = model_id, weights_hash
        self._text_cache: dict[str, torch.Tensor] = {}
        apply_execution_options(self.model, placement)  # open_clip checkpoints without a flag to flip

    @classmethod
    def load(cls, source: str, opts: LoadOptions, placement: Placement) -> "OpenClipAdapter":
        # heavy, deferred to when this runs: open_clip
        import open_clip

        folder = resolve_checkpoint(source.removeprefix("local-dir:").removeprefix("hf-hub:"), opts)
        if not isinstance(folder, Path):
            raise not_found(source)  # open_clip checkpoints are loaded from disk only
        config_file = folder / "open_clip_config.json"
        if not config_file.is_file():
            raise ModelNotFound(f"{folder} has no open_clip_config.json; point model.name_or_path at an open_clip checkpoint folder")
        precision = {torch.float32: "fp32", torch.bfloat16: "pure_bf16", torch.float16: "pure_fp16"}[placement.dtype]
        model, _, transform = open_clip.create_model_and_transforms(
            f"local-dir:{folder}", precision=precision, device=placement.device, weights_only=not opts.allow_pickle)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        pp = json.loads(config_file.read_text()).get("preprocess_cfg", {})
        size = pp.get("size", model.visual.image_size)
        size = size if isinstance(size, int) else size[0]
        preprocess = ClipStylePreprocess(shortest_edge=size, crop=(size, size),
                                         mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                         std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))
        return cls(model, tokenizer, preprocess, transform, placement, source, weights_sha256(folder))


    def _image_features(self, images: Images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            values = self.preprocess(images.to(self.device, torch.float32))
        else:
            values = torch.stack([self.real_transform(im.convert("RGB")) for im in images])
        return F.normalize(self.model.encode_image(values.to(self.device, self.dtype)).float(), dim=-1)

    def image_embeddings(self, images: Images) -> torch.Tensor:
        """Unit-norm image embeddings [B, D] (fp32): PIL images through the real transform, a pixel
        tensor [B,3,H,W] in [0,1] through the differentiable preprocessing (gradients flow)."""
        return self._image_features(images)

    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                feats = self.model.encode_text(self.tokenizer(missing).to(self.device)).float()
            for t, f in zip(missing, F.normalize(feats, dim=-1)):
                self._text_cache[t] = f
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        image = self._image_features(images)
        text = self._text_features([f"{p} {c}" for p in prompts for c in choices]).view(len(prompts), len(choices), -1)
        logits = self.model.logit_scale.exp().float() * torch.einsum("bd,bcd->bc", image, text)
        return logits.log_softmax(dim=-1)

    def target_loss(self, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[Target]) -> torch.Tensor:
        # Segments are joined into one text: an embedding has no tokens to weight.
        texts = [t if isinstance(t, str) else "".join(text for text, _ in t) for t in targets]
        image = self._image_features(pixels)
        return 1 - (image * self._text_features(texts)).sum(-1)


# The family's tiny random-init model for tests and demos (mmsafety/organisms/); conf/model presets name it.
register_builder("tiny_open_clip", "mmsafety.organisms.tiny_open_clip", "build_tiny_open_clip", 1, "random-init tiny open_clip ViT")
