"""A model behind an OpenAI-compatible chat-completions endpoint: OpenAI (gpt-4o), vLLM, SGLang,
Ollama, or `mmsafety-serve`. It generates, and scores fixed choices from the first answer token's
`top_logprobs` when the server returns them; it takes no gradient, so the attack's craft stage
refuses it (capabilities) and it judges saved PNGs only.

Configured from the `model:` node (conf/model/openai_compatible.yaml): mmsafety.app.load_model
hands it the node (`takes_model_config`), as it has no checkpoint or placement.
"""

from __future__ import annotations

import re
import uuid
from typing import ClassVar, Sequence

import torch
from omegaconf import OmegaConf
from PIL import Image

from mmsafety.config import ServedModelConfig
from mmsafety.errors import UserError
from mmsafety.models.base import Generates, ScoresChoices
from mmsafety.models.pixels import pixels_to_pil
from mmsafety.models.registry import register_adapter
from mmsafety.served.client import ServedClient, NOT_RUN, Failure
from mmsafety.served.encoding import data_url, encode_image, pixel_fingerprint
from mmsafety.served.errors import BudgetExhausted, SampleErrors
from mmsafety.served.logprobs import choice_logprobs_from_tokens
from mmsafety.served.settings import settings_from_config

# Tokens asked for when scoring choices: the answer word, and room for a space token before it.
CHOICE_TOKENS = 2


def _as_pil(images) -> list[Image.Image]:
    if isinstance(images, torch.Tensor):  # pixels in [0,1]: sent as the 8-bit image a PNG would hold
        return [pixels_to_pil(x) for x in images.detach().cpu()]
    return list(images)


@register_adapter("openai_compatible")
class OpenAICompatibleAdapter(Generates, ScoresChoices):
    """Batched `generate` and `choice_logprobs` over HTTP; a batch is sent concurrently (at most
    model.max_connections in flight) and answered from the response cache where it can be.

    Attributes read by records: name, model_id (the served model name), weights_sha256 (None: a
    server's weights cannot be fingerprinted; records carry the base URL instead).
    """

    name: ClassVar[str]
    takes_model_config: ClassVar[bool] = True
    device = torch.device("cpu")  # where images are encoded; models elsewhere
    weights_sha256 = None

    def __init__(self, settings, client):
        self.settings, self.client = settings, client
        self.model_id = settings.model
        self._logprobs_checked = False

    @classmethod
    def load(cls, source: str, opts=None, placement=None) -> "OpenAICompatibleAdapter":
        """The served model named `source` with every other setting at its default (base_url,
        api_key_env, ...): a served model has no checkpoint to load or place."""
        return cls.from_config(OmegaConf.structured(ServedModelConfig(name=source, adapter=cls.name, name_or_path=source)))

    @classmethod
    def from_config(cls, model_cfg, preflight: bool = True) -> "OpenAICompatibleAdapter":
        """Settings from the `model:` node, a client, and (by default) the one-line checks of the
        server, key and model name before anything is sent. A job then sends one real chat
        request (`probe`, called by mmsafety.cli.lifecycle.run_job) before its first sample."""
        settings = settings_from_config(model_cfg)
        client = ServedClient(settings)
        try:
            adapter = cls(settings, client)
            if preflight:
                client.preflight()
        except BaseException:
            client.close()
            raise
        return adapter

    @property
    def accounting(self):
        return self.client.accounting

    def served_record(self) -> dict:
        """Settings (never the key) and this run's accounting, for record.json."""
        return {"settings": self.settings.describe(), "accounting": self.accounting.as_dict()}

    def close(self) -> None:
        self.client.close()

    def probe(self) -> None:
        """One real chat request before the run: a server can list its models and still refuse every
        chat request (a proxy with a wrong key answers 400 to each). A small image with a short text
        is sent first; refused, the same text alone (a text-only model refuses images); refused
        again, or unanswered after every retry, the run stops here in one line, before any sample
        is recorded. Never answered from the cache (its key carries a fresh nonce): a cached answer
        says nothing about the server now. Counted in the accounting like any request."""
        probe_image = Image.new("RGB", (32, 32), (128, 128, 128))
        reasons = []
        for images in ([probe_image], None):
            (key, build), = self._requests(images, ["Answer with one word: is this a test?"], 1, None)
            response, = self.client.complete([({**key, "probe_nonce": uuid.uuid4().hex}, build)])
            if response is NOT_RUN:
                self.accounting.check_budget()  # a budget of 0 requests: its own one line
            if not isinstance(response, Failure):
                return
            reasons.append(response.reason)
            if not re.match(r"\d{3} refused", response.reason):  # no answer after every retry: not the image's fault
                break
        why = " / then text only: ".join(reasons)[:400]
        raise UserError(f"the server at {self.settings.base_url} did not answer a well-formed probe request for "
                        f"{self.settings.model} ({why}); no sample was sent: check the server, its key and "
                        f"model.name_or_path, then run the same command again")

    # -- requests ---------------------------------------------------------------------
    def _requests(self, images, prompts: Sequence[str], max_tokens: int, top_logprobs: int | None):
        s = self.settings
        sampling = {"temperature": s.temperature, "max_tokens": max_tokens}
        if top_logprobs is not None:
            sampling.update(logprobs=True, top_logprobs=top_logprobs)
        pairs = []
        if images is None:  # text-only requests (a served text model, e.g. a judge classifier)
            for prompt in prompts:
                wire = {"model": s.model, "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                        **sampling}
                pairs.append((wire, lambda wire=wire: wire))
            return pairs
        for image, prompt in zip(_as_pil(images), prompts):
            fmt = {"format": s.image_format, **({"quality": s.jpeg_quality} if s.image_format == "jpeg" else {})}
            key_image = {"type": "image", "sha256": pixel_fingerprint(image), **fmt}
            key = {"model": s.model, "messages": [{"role": "user", "content": [key_image, {"type": "text", "text": prompt}]}],
                   **sampling}

            def build(image=image, prompt=prompt):
                url = data_url(encode_image(image, s.image_format, s.jpeg_quality), s.image_format)
                parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
                return {"model": s.model, "messages": [{"role": "user", "content": parts}], **sampling}

            pairs.append((key, build))
        return pairs

    def _complete(self, images, prompts, max_tokens, top_logprobs=None) -> list:
        """Responses in order; raises BudgetExhausted when a budget kept any from being sent, and
        SampleErrors (carrying the answers that did arrive) when any failed after its retries."""
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts: give one image per prompt")
        responses = self.client.complete(self._requests(images, prompts, max_tokens, top_logprobs))
        if any(r is NOT_RUN for r in responses):
            self.accounting.check_budget()
            raise BudgetExhausted("a budget was reached")  # check_budget raises the precise message first
        return responses, [r.reason if isinstance(r, Failure) else None for r in responses]

    # -- capabilities -----------------------------------------------------------------
    def generate(self, images, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """Answers at model.temperature (0: greedy) with at most model.max_tokens (default
        `max_new_tokens`) tokens; `images=None` sends text-only requests (a served text model).
        Raises SampleErrors when some requests failed after retries."""
        responses, reasons = self._complete(images, list(prompts), self.settings.max_tokens or max_new_tokens)
        answers = [None if why else r["content"].strip() for r, why in zip(responses, reasons)]
        if any(reasons):
            raise SampleErrors(answers, reasons)
        return answers

    def choice_logprobs(self, images, prompts: Sequence[str], choices: Sequence[str]) -> torch.Tensor:
        """log p(first word of each choice), spellings pooled, from `top_logprobs` of a short greedy
        answer (a leading space token is followed to the word after it): float32 [B, len(choices)], -inf where a choice is not in the top-k (see
        mmsafety.served.logprobs). Raises SampleErrors when some requests failed."""
        responses, reasons = self._complete(images, list(prompts), CHOICE_TOKENS, self.settings.top_logprobs)
        rows, reasons = [], list(reasons)
        for i, r in enumerate(responses):
            if reasons[i] is None and not r["answer_token_logprobs"]:
                reasons[i] = "the server returned no logprobs"
            rows.append(None if reasons[i] else choice_logprobs_from_tokens(r["answer_token_logprobs"], list(choices)))
        if any(reasons):
            raise SampleErrors([None if row is None else torch.tensor(row, dtype=torch.float32) for row in rows], reasons)
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(choices))

    def check_logprobs(self) -> None:
        """One probe request (cached like any other) before a run that scores choices: a server that
        returns no logprobs is refused in one line, naming scoring=generate."""
        if self._logprobs_checked:
            return
        probe = Image.new("RGB", (32, 32), (128, 128, 128))
        responses, reasons = self._complete([probe], ["Answer Yes or No: is this image grey?"], CHOICE_TOKENS,
                                            self.settings.top_logprobs)
        if reasons[0]:
            raise UserError(f"the server at {self.settings.base_url} failed a logprobs probe ({reasons[0]}); "
                            f"use scoring=generate, or check the server")
        if not responses[0]["answer_token_logprobs"]:
            raise UserError(f"the server at {self.settings.base_url} returns no logprobs for {self.settings.model}; "
                            f"use scoring=generate (the paper's protocol), or a server that returns top_logprobs")
        self._logprobs_checked = True
