"""Answers of a local transformers adapter to chat requests, with what the OpenAI protocol asks
for beyond the adapter contract: roles, sampling, penalties, logit bias, stop strings, each token's
log-probabilities and the text piece it adds (for streaming).

Two ways in, one way out:
- a model whose processor has a chat template (LLaVA, LLaVA-NeXT, Idefics3, Qwen2-VL): the whole
  conversation, roles kept, rendered by that template and encoded by the processor
  (`prepare_chat`); `generate_rows` calls the model's `generate` on a left-padded batch;
- a model without one (PaliGemma, BLIP, a causal_lm judge): one user message, the adapter's own
  `generate` (`generate_with_adapter`), whose call to `model.generate` is wrapped for one call.
Both give the same `Generation`s through `_finish`.

Sampling uses one `torch.Generator` per choice on the CPU, so a seeded answer does not depend on
what else shares its batch or on the device; the drawn token is forced through greedy search (its
score is the only finite one), so transformers' own decoding loop, caches and stopping stay as is.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from mmsafety.models.context import context_length
from mmsafety.serving.protocol import Decoding, RequestError

_WRAP_LOCK = threading.Lock()  # one wrapped adapter call at a time (the wrapper is per model object)
# What a request without max_tokens may generate when the model does not say how long its context is.
UNKNOWN_CONTEXT_MAX_TOKENS = 1024


@dataclass
class GeneratedToken:
    token: str
    logprob: float
    top: list[tuple[str, float]]  # the most likely tokens at this step, best first


@dataclass
class Generation:
    text: str
    tokens: list[GeneratedToken]  # empty when logprobs were not asked for
    pieces: list[str]  # the text each generated token adds; "".join(pieces) == text
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


@dataclass
class Row:
    """One choice to generate: the encoded prompt (chat path) or the adapter's (image, prompt)."""

    inputs: dict | None
    image: object
    prompt: str | None
    max_tokens: int
    decoding: Decoding
    generator: torch.Generator | None
    top_logprobs: int | None
    prompt_tokens: int = 0
    cancel: threading.Event | None = None  # set when nobody waits for the answer any more: the row stops

    @property
    def batch_key(self) -> tuple:
        """Rows with equal keys run in one `generate`: same length limit and logprobs, and vision
        inputs that concatenate (the same tensors, equal but for the image count)."""
        shapes = tuple((k, tuple(v.shape[1:])) for k, v in sorted((self.inputs or {}).items())
                       if k not in ("input_ids", "attention_mask"))
        return (self.max_tokens, self.top_logprobs, self.inputs is None, shapes)


def chat_template(adapter) -> str | None:
    processor = getattr(adapter, "processor", None)
    return getattr(processor, "chat_template", None) if processor is not None else None


def generator_for(seed: int | None, choice: int) -> torch.Generator:
    """Choice `choice` of a request with `seed` (None: a fresh random seed) draws from seed + choice."""
    base = secrets.randbits(62) if seed is None else seed
    return torch.Generator().manual_seed((base + choice) % 2 ** 64)


def _template_knows_system(adapter) -> bool:
    """False when the template renders a system turn exactly as an assistant turn (it has no system
    role, so the instruction would reach the model as something it said) or refuses system turns.
    Two renders of a three-word chat: cheap next to a forward, so nothing is cached."""
    probe = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    render = adapter.processor.apply_chat_template
    try:
        as_system = render([{"role": "system", "content": [{"type": "text", "text": "s"}]}, *probe])
        as_assistant = render([{"role": "assistant", "content": [{"type": "text", "text": "s"}]}, *probe])
    except Exception:  # the template refuses system turns outright
        return False
    return as_system != as_assistant


def prompt_limit(adapter, prompt_tokens: int, max_tokens: int | None, param: str,
                 max_param: str = "max_tokens") -> int:
    """`max_tokens`, or what is left of the context; RequestError when the prompt and the answer do not fit,
    naming `param` for the prompt, `max_param` (the field the client sent) for the answer."""
    limit = context_length(adapter)
    if limit is None:
        return max_tokens or UNKNOWN_CONTEXT_MAX_TOKENS
    if prompt_tokens >= limit:
        raise RequestError(f"This model's maximum context length is {limit} tokens; the messages take {prompt_tokens} "
                           "(images included). Shorten the messages.", param, "context_length_exceeded")
    if max_tokens is not None and prompt_tokens + max_tokens > limit:
        raise RequestError(f"This model's maximum context length is {limit} tokens; the messages take {prompt_tokens} "
                           f"and {max_param} asks for {max_tokens}. Ask for at most {limit - prompt_tokens}.",
                           max_param, "context_length_exceeded")
    return max_tokens if max_tokens is not None else limit - prompt_tokens


def tokens_at_least(tokenizer, text: str, enough: int) -> tuple[int, int]:
    """(tokens, characters counted): `text` tokenized on prefixes of 4, 8, 16... characters per
    token wanted, each cut at a space, until `enough` tokens are counted or the text ends. A 5 MB
    prompt is found too long on its first 2,000 characters instead of tokenized whole (17 s on 2
    busy cores). A prefix cut at a space takes no more tokens than the whole text does."""
    size = 4 * max(1, enough)
    while True:
        prefix = text
        if size < len(text):
            prefix = text[:size]
            cut = prefix.rfind(" ")
            prefix = prefix[:cut] if cut > 0 else prefix
        n = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        if n >= enough or len(prefix) == len(text):
            return n, len(prefix)
        size *= 2


def check_prompt_size(adapter, texts: list[str], max_tokens: int | None, param: str = "messages",
                      max_param: str = "max_tokens") -> None:
    """Refuse, before the template and the processor see it, a prompt whose text alone cannot fit the
    context with `max_tokens` (RequestError naming the context and at least how many tokens it takes)."""
    limit, tokenizer = context_length(adapter), getattr(adapter, "tokenizer", None)
    if limit is None or tokenizer is None:
        return
    text = "\n".join(texts)
    if len(text) < limit:  # fewer characters than the context: cheap for the exact count that follows
        return
    room = limit - (max_tokens or 1) + 1  # the text alone past this cannot fit
    n, counted = tokens_at_least(tokenizer, text, max(1, room))
    if n >= room:
        where = f" (counted on its first {counted} of {len(text)} characters)" if counted < len(text) else ""
        asked = f" and {max_param} asks for {max_tokens}" if max_tokens is not None else ""
        raise RequestError(f"This model's maximum context length is {limit} tokens; the messages' text alone takes at "
                           f"least {n} tokens{where}{asked}. Shorten the messages.", param, "context_length_exceeded")


def prepare_chat(adapter, conversation: list[dict], images: list, tools: list[dict] | None = None) -> dict:
    """The conversation through the model's own chat template and processor: input_ids [1, L],
    attention_mask and the vision inputs. RequestError when the template cannot carry it. `tools`:
    OpenAI function entries, rendered by a template that declares tools."""
    if any(m["role"] == "system" for m in conversation) and not _template_knows_system(adapter):
        i = next(i for i, m in enumerate(conversation) if m["role"] == "system")
        raise RequestError(f"messages[{i}].role='system': this model's chat template has no system role; "
                           "put the instruction in the user message", f"messages[{i}].role", "unsupported_role")
    try:
        extra = {"tools": tools} if tools else {}
        text = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True, **extra)
    except Exception as e:  # jinja's TemplateError: e.g. a template that requires alternating roles
        raise RequestError(f"messages: the model's chat template refused them: {e}", "messages",
                           "invalid_conversation") from None
    enc = adapter.processor(text=[text], images=[images] if images else None, return_tensors="pt")
    return dict(enc)


def adapter_prompt(conversation: list[dict], images: list, text_only: bool) -> str:
    """The prompt for an adapter without a chat template: its one user message's text."""
    if len(conversation) != 1 or conversation[0]["role"] != "user":
        roles = [m["role"] for m in conversation]
        raise RequestError(f"messages: this model has no chat template, so it takes one user message (got roles {roles})",
                           "messages", "unsupported_conversation")
    want = 0 if text_only else 1
    if len(images) != want:
        what = "no image: this model reads text only" if text_only else "exactly one image with this model"
        raise RequestError(f"messages: send {what} (got {len(images)})", "messages", "invalid_image_count")
    return "\n".join(p["text"] for p in conversation[0]["content"] if p["type"] == "text")


class RowDecoding(LogitsProcessor):
    """Per row: logit bias, presence and frequency penalties (OpenAI's formula: logit - count *
    frequency - [count > 0] * presence, over the tokens generated so far), then at temperature > 0
    a draw from softmax(logits / T) within the top_p nucleus, with the row's own generator."""

    def __init__(self, decodings: Sequence[Decoding], generators: Sequence[torch.Generator | None]):
        self.decodings, self.generators = list(decodings), list(generators)
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        out = scores.float().clone()
        generated = input_ids[:, self.prompt_length:]
        for b, (d, g) in enumerate(zip(self.decodings, self.generators)):
            if d.plain:
                continue
            s = out[b]
            for token, bias in d.logit_bias:
                if token < s.numel():
                    s[token] += bias
            if d.presence_penalty or d.frequency_penalty:
                counts = torch.bincount(generated[b], minlength=s.numel())[: s.numel()].to(s)
                s -= counts * d.frequency_penalty + (counts > 0).to(s) * d.presence_penalty
            if d.temperature > 0:
                token = sample(s, d.temperature, d.top_p, g)
                s.fill_(float("-inf"))
                s[token] = 0.0
        return out


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """A draw from softmax(logits / temperature) restricted to the smallest set of most likely tokens
    whose probability reaches top_p (always at least the most likely one)."""
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    if top_p < 1:
        ordered, order = probs.sort(descending=True)
        before = ordered.cumsum(0) - ordered  # mass of the strictly more likely tokens
        ordered[before >= top_p] = 0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class StopStrings(StoppingCriteria):
    """Ends a row when its generated text contains one of its stop strings; remembers the step."""

    def __init__(self, tokenizer, stops: Sequence[tuple[str, ...]]):
        self.tokenizer, self.stops = tokenizer, list(stops)
        self.prompt_length: int | None = None
        self.hit: list[int | None] = [None] * len(self.stops)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1] - 1  # called once a token has been appended
        done = torch.zeros(len(self.stops), dtype=torch.bool)
        for b, stops in enumerate(self.stops):
            if stops and self.hit[b] is None:
                text = self.tokenizer.decode(input_ids[b, self.prompt_length:], skip_special_tokens=True)
                if any(s in text for s in stops):
                    self.hit[b] = input_ids.shape[1] - self.prompt_length
            done[b] = self.hit[b] is not None
        return done.to(input_ids.device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _pieces(tokenizer, ids: list[int], text: str) -> list[str]:
    """The text each token adds, cut so that the pieces concatenate to `text` exactly (the answer
    after stripping and stop strings); a token that ends inside an unfinished character adds ""."""
    ends, end = [], 0
    for k in range(len(ids)):
        prefix = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        for candidate in (prefix.lstrip(), prefix):
            if text.startswith(candidate[: len(text)]) and len(candidate) >= end:
                end = min(len(candidate), len(text))
                break
        ends.append(end)
    if ends:
        ends[-1] = len(text)
    starts = [0] + ends[:-1]
    return [text[a:b] for a, b in zip(starts, ends)] if ids else ([text] if text else [])


def _finish(model, tokenizer, rows: Sequence[Row], new_ids: torch.Tensor, logits, stop_hits, texts=None) -> list[Generation]:
    eos = _eos_ids(model, tokenizer)
    want_logprobs = any(r.top_logprobs is not None for r in rows)
    logprobs = [torch.log_softmax(step.float(), dim=-1).cpu() for step in logits] if want_logprobs else []
    out = []
    for b, r in enumerate(rows):
        row = new_ids[b].tolist()
        length = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        finish = "stop" if length < len(row) or (row and row[length - 1] in eos) else "length"
        if stop_hits[b] is not None and stop_hits[b] <= length:
            length, finish = stop_hits[b], "stop"
        text = texts[b] if texts is not None else tokenizer.decode(row[:length], skip_special_tokens=True).strip()
        if r.decoding.stop:
            cut = min((text.find(s) for s in r.decoding.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut].rstrip() if texts is None else text[:cut], "stop"
        tokens = []
        for t in range(length if r.top_logprobs is not None else 0):
            lp, token_id = logprobs[t][b], row[t]
            best = torch.topk(lp, k=max(1, r.top_logprobs)).indices.tolist() if r.top_logprobs else []
            tokens.append(GeneratedToken(tokenizer.decode([token_id]), lp[token_id].item(),
                                         [(tokenizer.decode([i]), lp[i].item()) for i in best]))
        out.append(Generation(text, tokens, _pieces(tokenizer, row[:length], text), r.prompt_tokens, length, finish))
    return out


class Cancelled(StoppingCriteria):
    """Ends the rows whose `cancel` event is set (a client that went away, a shutdown): the batch's
    `generate` returns as soon as every row has ended, so nobody's abandoned work goes on."""

    def __init__(self, events: Sequence[threading.Event | None]):
        self.events = list(events)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = [e is not None and e.is_set() for e in self.events]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _decoding_kwargs(rows: Sequence[Row], tokenizer):
    stops = StopStrings(tokenizer, [r.decoding.stop for r in rows])
    criteria = [stops] + ([Cancelled([r.cancel for r in rows])] if any(r.cancel is not None for r in rows) else [])
    kwargs = dict(output_logits=True, return_dict_in_generate=True,
                  stopping_criteria=StoppingCriteriaList(criteria))
    if not all(r.decoding.plain for r in rows):
        kwargs["logits_processor"] = LogitsProcessorList([RowDecoding([r.decoding for r in rows],
                                                                      [r.generator for r in rows])])
    return kwargs, stops


@torch.inference_mode()
def generate_rows(adapter, rows: Sequence[Row]) -> list[Generation]:
    """One `generate` over rows prepared by `prepare_chat` (equal `batch_key`s), left-padded."""
    model, tok = adapter.model, adapter.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(r.inputs["input_ids"].shape[1] for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = r.inputs["input_ids"].shape[1]
        ids[b, width - n:] = r.inputs["input_ids"][0]
        mask[b, width - n:] = r.inputs["attention_mask"][0]
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    vision = {}
    for key in rows[0].inputs:
        if key not in ("input_ids", "attention_mask"):
            value = torch.cat([r.inputs[key] for r in rows])
            vision[key] = value.to(device, dtype) if value.is_floating_point() else value.to(device)
    kwargs, stops = _decoding_kwargs(rows, tok)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **vision,
                         max_new_tokens=rows[0].max_tokens, do_sample=False, pad_token_id=pad, **kwargs)
    new_ids = out.sequences[:, width:].cpu()
    return _finish(model, tok, rows, new_ids, out.logits, stops.hit)


def generate_with_adapter(adapter, rows: Sequence[Row]) -> list[Generation]:
    """The adapter's own `generate` on rows of (image, prompt), its `model.generate` call extended
    for one call with the rows' decoding, stop strings and logits."""
    if not (hasattr(getattr(adapter, "model", None), "generate") and hasattr(adapter, "tokenizer")):
        if not all(r.decoding.plain and not r.decoding.stop and r.top_logprobs is None for r in rows):
            raise RequestError("this model only decodes greedily without logprobs or stop strings", None,
                               "unsupported_parameter")
        texts = adapter.generate([r.image for r in rows], [r.prompt for r in rows], max_new_tokens=rows[0].max_tokens)
        return [Generation(t, [], [t] if t else [], 0, 0, "stop") for t in texts]
    model, tok = adapter.model, adapter.tokenizer
    kwargs, stops = _decoding_kwargs(rows, tok)
    captured: dict = {}
    original = model.generate

    def generate_and_keep_logits(*args, **call_kwargs):
        out = original(*args, **call_kwargs, **kwargs)
        mask, ids = call_kwargs.get("attention_mask"), call_kwargs.get("input_ids")
        captured["prompt_tokens"] = (mask.sum(1).tolist() if mask is not None
                                     else [ids.shape[1]] * ids.shape[0] if ids is not None else None)
        captured["new_ids"] = out.sequences[:, out.sequences.shape[1] - len(out.logits):].cpu()
        captured["logits"] = out.logits
        return out.sequences

    images = None if all(r.image is None for r in rows) else [r.image for r in rows]
    with _WRAP_LOCK:
        model.generate = generate_and_keep_logits
        try:
            texts = adapter.generate(images, [r.prompt for r in rows], max_new_tokens=rows[0].max_tokens)
        finally:
            del model.generate  # the instance attribute; the class's method shows through again
    for r, n in zip(rows, captured.get("prompt_tokens") or [0] * len(rows)):
        r.prompt_tokens = int(n)
    return _finish(model, tok, rows, captured["new_ids"], captured["logits"], stops.hit, texts=list(texts))
