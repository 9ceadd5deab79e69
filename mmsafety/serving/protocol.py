"""A chat-completions request body checked field by field: every field the server knows is honoured
or refused with a `RequestError` (a 400 naming the field); an unknown field is refused as OpenAI
itself does ("Unrecognized request argument supplied"). docs/serving.md lists the same table.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmsafety.agents.formats import ToolFormat


class RequestError(Exception):
    """A client mistake: HTTP `status` (400 unless said) with OpenAI's error body naming `param`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# Fields that change the answer and are applied as OpenAI documents them.
HONOURED = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed", "stop",
            "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "stream",
            "stream_options", "tools", "parallel_tool_calls")  # tools: mmsafety.serving.tools
# Fields accepted only at the value that asks for nothing this server lacks; any other value is a 400.
ONLY_AT = {
    "tool_choice": "absent, null, \"auto\" or \"none\": nothing forces the model to call a tool",
    "functions": "absent, null or []: this server has no function calling",
    "function_call": "absent, null or \"none\": this server has no function calling",
    "response_format": "absent, null or {\"type\": \"text\"}: no JSON mode or JSON schema",
    "modalities": "absent, null or [\"text\"]: the answer is text only",
    "audio": "absent or null: no audio output",
    "prediction": "absent or null: no predicted outputs",
    "web_search_options": "absent or null: no web search",
    "reasoning_effort": "absent or null: the model does not reason separately",
    "verbosity": "absent or null: no verbosity control",
    "store": "absent, null or false: nothing is stored",
    "service_tier": "absent, null, \"auto\" or \"default\": there is one tier",
}
# Fields that do not change the answer, accepted and not used (why, per field).
NOT_USED = {
    "user": "an end-user id for the provider's abuse monitoring; the answer does not depend on it",
    "safety_identifier": "as `user`",
    "metadata": "tags for stored completions; nothing is stored (store is refused)",
    "prompt_cache_key": "a hint for the provider's prompt cache; the answer does not depend on it",
    "prompt_cache_retention": "as prompt_cache_key",
}
MAX_STOP, MAX_N, MAX_TOP_LOGPROBS = 4, 128, 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, each checked before any model work (docs/serving.md lists them
    with their flags). A request past one gets a 4xx in OpenAI's shape naming the limit and its value."""

    max_body_bytes: int = 16 * 2 ** 20  # 413 past it, refused from Content-Length or while reading
    max_json_depth: int = 32  # a chat request nests 6 deep; 100,000 nested arrays crash json's recursion
    max_messages: int = 256
    max_parts: int = 1024  # content parts over all messages
    max_image_pixels: int = 4096 * 4096  # per image, read from its header before decoding
    max_queue: int = 64  # requests in the server at once (being read, waiting or running); 429 past it
    body_timeout_s: float = 30.0  # a body not received whole by then is a 408 (a slow sender holds a slot)
    queue_timeout_s: float = 60.0  # a request still waiting for the model after this gets a 429
    long_tokens: int = 128  # requests allowed more new tokens than this run in their own lane, and may
    # hold at most half of max_queue, so short requests always find room


# A JSON string with its escapes (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(raw: bytes) -> int:
    """How deep the brackets of a JSON text nest, outside strings (before parsing it)."""
    codes = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}"))))
    return int(steps.cumsum().max(initial=0))


def load_body(raw: bytes, limits: Limits):
    """The request body parsed as JSON (RequestError 400 when it is not JSON or nests too deep)."""
    depth = json_depth(raw)
    if depth > limits.max_json_depth:
        raise RequestError(f"the request body nests {depth} levels deep; at most {limits.max_json_depth} are accepted "
                           "(--max-json-depth)", None, "json_too_deep")
    try:
        return json.loads(raw)
    except RecursionError:  # only when --max-json-depth is set above Python's recursion limit
        raise RequestError(f"the request body nests deeper than the JSON parser allows ({depth} levels)", None,
                           "json_too_deep") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(f"the request body is not JSON ({str(e)[:80]}): send a JSON object", None,
                           "invalid_json") from None


@dataclass(frozen=True)
class Decoding:
    """How one choice's tokens are chosen. temperature 0: greedy (the argmax after bias and penalties)."""

    temperature: float = 0.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        """Greedy with nothing applied to the logits: the adapter's own decoding."""
        return (self.temperature == 0 and not self.logit_bias and not self.presence_penalty
                and not self.frequency_penalty)


@dataclass
class ChatRequest:
    conversation: list[dict]  # transformers chat format: {"role", "content": [{"type": "image"} | {"type": "text", "text"}]}
    images: list[Image.Image]
    max_tokens: int | None  # None: until the end of the context
    max_tokens_param: str = "max_tokens"  # the field the client sent it in: the one a 400 about it names
    n: int = 1
    seed: int | None = None
    decoding: Decoding = field(default_factory=Decoding)
    top_logprobs: int | None = None  # None: no logprobs
    stream: bool = False
    include_usage: bool = False
    tools: object = None  # mmsafety.serving.tools.ToolRequest, set by the server when the request has tools


def _number(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name}={value!r}: must be a number from {low:g} to {high:g}", name, "invalid_value")
    return float(value)


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise RequestError(f"{name}={value!r}: must be an integer {bound}", name, "invalid_value")
    return value


def _check_unsupported(body: dict) -> None:
    for name in body:
        if name not in HONOURED and name not in ONLY_AT and name not in NOT_USED:
            raise RequestError(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    allowed = {
        "tool_choice": body.get("tool_choice") in (None, "none", "auto"),
        "functions": body.get("functions") in (None, []), "function_call": body.get("function_call") in (None, "none"),
        "response_format": body.get("response_format") in (None, {"type": "text"}),
        "modalities": body.get("modalities") in (None, ["text"]),
        "audio": body.get("audio") is None, "prediction": body.get("prediction") is None,
        "web_search_options": body.get("web_search_options") is None,
        "reasoning_effort": body.get("reasoning_effort") is None, "verbosity": body.get("verbosity") is None,
        "store": body.get("store") in (None, False), "service_tier": body.get("service_tier") in (None, "auto", "default"),
    }
    for name, ok in allowed.items():
        if name in body and not ok:
            raise RequestError(f"{name}={body[name]!r} is not supported by mmsafety-serve; send it {ONLY_AT[name]}",
                               name, "unsupported_parameter")


def decode_image(url: str, max_pixels: int) -> Image.Image:
    """A base64 image data URL to an RGB image; its size is read from the header and checked
    against `max_pixels` before the pixels are decoded (RequestError with both numbers)."""
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("only base64 image data URLs (data:image/png;base64,...) are accepted")
    raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise RequestError(f"the image is {width} x {height} = {width * height} pixels; at most {max_pixels} "
                                   "are accepted (--max-image-pixels)", None, "image_too_large")
            return im.convert("RGB")
    except Image.DecompressionBombError as e:  # PIL's guard at open (past twice its MAX_IMAGE_PIXELS): the size is in e
        raise RequestError(f"the image has more than {max_pixels} pixels, the limit (--max-image-pixels): {e}", None,
                           "image_too_large") from None


def _image(part: dict, where: str, max_pixels: int) -> Image.Image:
    url = part.get("image_url")
    detail = url.get("detail", "auto") if isinstance(url, dict) else "auto"
    if detail not in (None, "auto"):
        raise RequestError(f"{where}.image_url.detail={detail!r}: the model sees every image at its own resolution; "
                           "send \"auto\"", f"{where}.image_url.detail", "unsupported_parameter")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise RequestError(f"{where}.image_url.url must be a string (a data:image/...;base64 URL)",
                           f"{where}.image_url.url", "invalid_value")
    try:
        image = decode_image(url, max_pixels)
    except RequestError as e:
        raise RequestError(f"{where}.image_url.url: {e.message}", f"{where}.image_url.url", e.code) from None
    except (ValueError, binascii.Error) as e:  # not a data URL, bad base64
        message = str(e) if url.startswith("data:image/") else (
            "only base64 image data URLs (data:image/png;base64,...) are accepted; this server fetches no URLs")
        raise RequestError(f"{where}.image_url.url: {message}", f"{where}.image_url.url", "invalid_image_url") from None
    except (UnidentifiedImageError, OSError) as e:
        raise RequestError(f"{where}.image_url.url: the data is not a readable image ({type(e).__name__}); "
                           "send PNG or JPEG bytes", f"{where}.image_url.url", "invalid_image") from None
    return image


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
# Keys a message of a role may carry beside role and content.
_EXTRA = {"assistant": {"tool_calls"}, "tool": {"tool_call_id"}}


def calls_as_text(message: dict, where: str, fmt: ToolFormat) -> str:
    """An assistant message's `tool_calls`, written back in the model's format (what it wrote)."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise RequestError(f"{where}.tool_calls must be a list", f"{where}.tool_calls", "invalid_value")
    texts = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        try:
            args = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
            if not isinstance(fn["name"], str) or not isinstance(args, dict):
                raise TypeError
        except (TypeError, KeyError, ValueError):
            raise RequestError(f"{where}.tool_calls[{j}] must be {{\"id\", \"type\": \"function\", \"function\": "
                               "{\"name\", \"arguments\": a JSON object as a string}}", f"{where}.tool_calls[{j}]",
                               "invalid_value") from None
        texts.append(fmt.render_call(fn["name"], args))
    return "\n".join(texts)


def result_as_text(content: str, name: str, fmt: ToolFormat) -> str:
    """A `tool` message's result as the model reads results back in its format."""
    return fmt.render_results([{"name": name, "valid": True, "result": content}])


def parse_messages(messages, limits: Limits = Limits(), fmt: ToolFormat | None = None) -> tuple[list[dict], list[Image.Image]]:
    """(conversation in the transformers chat format, images in order). Roles are kept; `developer`
    is OpenAI's newer name for `system`. With `fmt` (the model's tool format), an assistant's
    `tool_calls` are written after its text in that format and a `tool` message is a user turn holding
    the result as the format writes results (what the model reads back in an agent loop)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages", "invalid_value")
    if len(messages) > limits.max_messages:
        raise RequestError(f"messages: {len(messages)} messages; at most {limits.max_messages} are accepted "
                           "(--max-messages)", "messages", "too_many_messages")
    parts_total = sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list))
    if parts_total > limits.max_parts:
        raise RequestError(f"messages: {parts_total} content parts; at most {limits.max_parts} are accepted "
                           "(--max-parts)", "messages", "too_many_parts")
    conversation, images = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content", where, "invalid_value")
        extra = set(m) - {"role", "content"} - (_EXTRA.get(m.get("role"), set()) if fmt is not None else set())
        if extra:  # name, tool_calls, tool_call_id, audio, refusal...
            key = sorted(extra)[0]
            raise RequestError(f"{where}.{key} is not supported by mmsafety-serve (messages carry role and content)",
                               f"{where}.{key}", "unsupported_parameter")
        role = _ROLES.get(m.get("role"))
        if role is None or (role == "tool" and fmt is None):
            raise RequestError(f"{where}.role={m.get('role')!r}: must be system, developer, user or assistant "
                               "(tool messages: send the request's tools)", f"{where}.role", "invalid_value")
        content = m.get("content")
        if role == "tool":
            name = _tool_name(messages[:i], m.get("tool_call_id"), where)
            if not isinstance(content, str):
                raise RequestError(f"{where}.content must be the tool's result as a string", f"{where}.content", "invalid_value")
            role, content = "user", result_as_text(content, name, fmt)
        elif role == "assistant" and m.get("tool_calls"):
            content = "\n".join(t for t in (content if isinstance(content, str) else "", calls_as_text(m, where, fmt)) if t)
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RequestError(f"{where}.content must be a string or a list of parts", f"{where}.content", "invalid_value")
        out = []
        for j, part in enumerate(parts):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                out.append({"type": "text", "text": part["text"]})
            elif kind == "image_url" and role == "user":
                images.append(_image(part, at, limits.max_image_pixels))
                out.append({"type": "image"})
            else:
                what = "image_url parts are read in user messages only" if kind == "image_url" else (
                    "a part is {\"type\": \"text\", \"text\": ...} or {\"type\": \"image_url\", ...}")
                raise RequestError(f"{at}: type {kind!r} is not supported here; {what}", f"{at}.type", "invalid_value")
        conversation.append({"role": role, "content": out})
    return conversation, images


def _tool_name(earlier: list, call_id, where: str) -> str:
    """The function name of the earlier assistant call that a tool message answers."""
    for m in reversed(earlier):
        for call in (m.get("tool_calls") or []) if isinstance(m, dict) and isinstance(m.get("tool_calls"), list) else []:
            if isinstance(call, dict) and call.get("id") == call_id and isinstance(call.get("function"), dict):
                return str(call["function"].get("name"))
    raise RequestError(f"{where}.tool_call_id={call_id!r} answers no earlier assistant tool call", f"{where}.tool_call_id",
                       "invalid_value")


def parse_request(body, served_name: str, vocab_size: int | None = None, limits: Limits = Limits(),
                  fmt: ToolFormat | None = None) -> ChatRequest:
    """The request `body` checked field by field (RequestError on the first problem). `fmt`: the model's
    tool format, given when the request has tools (tool messages are read only then)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None, "invalid_value")
    if "model" not in body:
        raise RequestError("you must provide a model parameter", "model", "missing_required_parameter")
    if body["model"] != served_name:
        raise RequestError(f"The model `{body['model']}` does not exist; this server serves `{served_name}`.",
                           "model", "model_not_found", status=404)
    _check_unsupported(body)
    conversation, images = parse_messages(body.get("messages"), limits, fmt)
    for name in ("max_tokens", "max_completion_tokens"):
        _integer(body, name, 1)  # 0 and negatives are refused, never replaced by a default
    # max_completion_tokens is OpenAI's newer name for max_tokens (deprecated in its favour). Both with
    # one value is one request; two values are refused rather than one picked silently: the client
    # meant one of them and a 400 says which two disagree, where a pick could cut its answers short.
    if None not in (body.get("max_tokens"), body.get("max_completion_tokens")) \
            and body["max_tokens"] != body["max_completion_tokens"]:
        raise RequestError(f"max_tokens={body['max_tokens']} and max_completion_tokens={body['max_completion_tokens']} "
                           "disagree; send max_completion_tokens alone (max_tokens is its deprecated name)",
                           "max_tokens", "invalid_value")
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(param)
    n = _integer(body, "n", 1, MAX_N) or 1
    seed = _integer(body, "seed", -(2 ** 63))
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if body.get("logprobs") not in (None, True, False):
        raise RequestError(f"logprobs={body['logprobs']!r}: must be true or false", "logprobs", "invalid_value")
    if top is not None and not body.get("logprobs"):
        raise RequestError("top_logprobs needs logprobs=true", "top_logprobs", "invalid_value")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop={body.get('stop')!r}: a non-empty string or a list of at most {MAX_STOP}", "stop",
                           "invalid_value")
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict):
        raise RequestError("logit_bias must map token ids to numbers from -100 to 100", "logit_bias", "invalid_value")
    pairs = []
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            token = -1
        if token < 0 or (vocab_size is not None and token >= vocab_size):
            raise RequestError(f"logit_bias: {key!r} is not a token id of this model (0 to {(vocab_size or 1) - 1})",
                               "logit_bias", "invalid_value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise RequestError(f"logit_bias[{key}]={value!r}: must be a number from -100 to 100", "logit_bias",
                               "invalid_value")
        pairs.append((token, float(value)))
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise RequestError(f"stream={stream!r}: must be true or false", "stream", "invalid_value")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise RequestError("stream_options is only allowed with stream=true", "stream_options", "invalid_value")
        unknown = sorted(set(options) - {"include_usage"}) if isinstance(options, dict) else ["(not an object)"]
        if unknown:  # e.g. include_obfuscation: this server pads nothing
            raise RequestError(f"stream_options.{unknown[0]} is not supported (only include_usage)",
                               f"stream_options.{unknown[0]}", "unsupported_parameter")
    decoding = Decoding(temperature=_number(body, "temperature", 0, 2, 1.0), top_p=_number(body, "top_p", 0, 1, 1.0),
                        presence_penalty=_number(body, "presence_penalty", -2, 2, 0.0),
                        frequency_penalty=_number(body, "frequency_penalty", -2, 2, 0.0),
                        logit_bias=tuple(pairs), stop=tuple(stop))
    if decoding.temperature > 0 and decoding.top_p == 0:
        raise RequestError("top_p=0 keeps no token; use temperature=0 for greedy decoding", "top_p", "invalid_value")
    return ChatRequest(conversation, images, max_tokens, param, n, seed, decoding,
                       (top or 0) if body.get("logprobs") else None, bool(stream),
                       bool(isinstance(options, dict) and options.get("include_usage")))
