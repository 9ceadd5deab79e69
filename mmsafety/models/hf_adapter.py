"""State, token helpers and the two scorings shared by the transformers-backed adapters."""

from __future__ import annotations

from typing import Sequence

import torch

from mmsafety.models.base import Images, Target, VLMAdapter
from mmsafety.models.execution import apply_execution_options, recomputing
from mmsafety.models.sequences import (
    TokenCache, choice_variants, combine_variants, per_row, target_ids_and_weights,
)
from mmsafety.placement import Placement


def template_renders_tools(processor, tools: Sequence[dict]) -> bool:
    """The processor's chat template writes tool schemas into the prompt (Qwen2.5's and other
    Hermes-style templates do; LLaVA-1.5's and the organism's do not)."""
    chat = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    try:
        return (processor.apply_chat_template(chat, add_generation_prompt=True, tools=list(tools))
                != processor.apply_chat_template(chat, add_generation_prompt=True))
    except Exception:  # noqa: BLE001 -- a template that fails on tools does not support them
        return False


class HFVLMAdapter(VLMAdapter):
    """The frozen model, its processor and tokenizer, where it runs, what it is, its pad id and
    the token caches. A family adds its image inputs and prompt layout through `target_nll`;
    `target_loss` and appended choice scoring are built on it here."""

    def __init__(self, model, processor, placement: Placement, model_id: str, weights_hash: str):
        self.model = model.eval().requires_grad_(False)  # attacks need pixel grads only
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.device, self.dtype = placement.device, placement.dtype
        self.model_id, self.weights_sha256 = model_id, weights_hash
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self._prompts_cache, self._answers_cache = TokenCache(), TokenCache()
        self._recomputed = apply_execution_options(self.model, placement)
        # How `generate` decodes: greedy. A caller may swap in sampling options for a while
        # (visual_attacks' case.sampling: Fu et al.'s temperature 0.1, top_p 0.75), seeding torch itself.
        self.decoding: dict = {"do_sample": False}
        # Tool schemas the chat template renders in every prompt (`use_chat_tools`); none by default.
        self.chat_tools: list[dict] = []

    def use_chat_tools(self, tools: Sequence[dict] | None) -> bool:
        """Hand `tools` (OpenAI function schemas) to the chat template in every prompt from now on, as
        `apply_chat_template(tools=...)` does for an agent framework, so the model sees its tools the
        way it was trained to. True when the template renders them; a template that ignores tools
        changes nothing and gives False. The prompt token cache is cleared: the prompts' tokens change."""
        tools = list(tools or [])
        if tools and not template_renders_tools(self.processor, tools):
            return False
        self.chat_tools = tools
        self._prompts_cache = TokenCache()
        self.__dict__.pop("_parts", None)  # the template's text around the user's words (LlavaAdapter)
        return bool(tools)

    def chat_text(self, chat: list[dict]) -> str:
        """The chat template's text for a conversation, with the generation prompt (and the tools in use)."""
        extra = {"tools": self.chat_tools} if self.chat_tools else {}
        return self.processor.apply_chat_template(chat, add_generation_prompt=True, **extra)

    def answer_ids(self, text: str, eos: bool = False) -> list[int]:
        """Tokens of an answer or target text (cached: attacks ask for the same targets every step)."""
        ids = self._answers_cache.get(text, lambda: self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids + [self.tokenizer.eos_token_id] if eos else list(ids)

    def target_nll(self, images: Images, prompts: Sequence[str], target_ids: Sequence[list[int]],
                   repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL of every target token, its row), as `sequences.token_nll`: target k follows prompt k
        and image k // repeat. `repeat` > 1 scores several targets per image while its inputs
        are computed once (appended choice scoring)."""
        raise NotImplementedError

    def target_loss(self, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[Target]) -> torch.Tensor:
        target_ids, weights = target_ids_and_weights(targets, self.answer_ids)
        with recomputing(self._recomputed):
            nll, rows = self.target_nll(pixels, list(prompts), target_ids)
        # Labelled positions come out row by row, left to right: the order `weights` was built in.
        weighted = nll * torch.tensor(weights, device=nll.device, dtype=nll.dtype)
        return per_row(weighted, rows, len(prompts), mean=False)

    @torch.inference_mode()
    def appended_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """Each choice's spelling variants (`sequences.spelling_variants`) appended to each prompt as full
        sequences, summed log-probabilities of their tokens, log-sum-exp over a choice's variants: the
        reference that cached scoring must equal."""
        choice_ids, owners = choice_variants(choices, self.answer_ids)
        n, v = len(prompts), len(choice_ids)
        nll, rows = self.target_nll(images, [p for p in prompts for _ in range(v)], choice_ids * n, repeat=v)
        return combine_variants(-per_row(nll, rows, n * v, mean=False).view(n, v), owners, len(choices))

    def choice_logprobs(self, images: Images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """Appended scoring, unless the family has a cached one."""
        return self.appended_logprobs(images, prompts, choices)
