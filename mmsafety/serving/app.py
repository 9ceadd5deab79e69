"""The OpenAI chat-completions protocol over a local adapter (FastAPI): POST /v1/chat/completions
and GET /v1/models, with images as base64 data URLs, `logprobs`/`top_logprobs` and `usage`.

One request carries one image and the text of its messages (the adapter applies its own chat
template), or no image for a text-only adapter (`text_only`, e.g. a judge classifier); `n` > 1 and streaming are refused with 400. Errors use the OpenAI error body, so the
official client raises its usual exceptions.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mmsafety.served.encoding import decode_data_url
from mmsafety.serving.batcher import Batcher, Job
from mmsafety.serving.local_logprobs import can_report_logprobs, generate_with_logprobs


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def parse_messages(messages) -> tuple[str, list]:
    """(text, images) of a chat: text parts of every message joined in order, data-URL images."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    texts, images = [], []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                url = part.get("image_url") or {}
                images.append(decode_data_url(url.get("url", "") if isinstance(url, dict) else str(url)))
            else:
                raise ValueError(f"content part type {part.get('type')!r} is not supported (text, image_url)")
    return "\n".join(t for t in texts if t), images


def _logprobs_body(generation, top_logprobs: int) -> dict:
    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(s, lp) for s, lp in t.top[:top_logprobs]]}
                        for t in generation.tokens]}


def create_app(adapter, served_name: str, api_key: str | None = None, delay_s: float = 0.0,
               max_batch: int = 16, logprobs: bool = True) -> FastAPI:
    """The server for `adapter` under the model name `served_name`. `api_key`: when set, requests
    must carry it as a bearer token (401 otherwise). `delay_s`: added to every completion (to
    measure a client against a slow server). `logprobs=False` behaves like a server that never
    returns them."""
    reports_logprobs = logprobs and can_report_logprobs(adapter)
    text_only = getattr(adapter, "text_only", False)  # e.g. a judge classifier (mmsafety.models.causal_lm)

    def run(images, prompts, max_tokens, top_logprobs):
        return generate_with_logprobs(adapter, images, prompts, max_tokens, top_logprobs if reports_logprobs else None)

    batcher = Batcher(run, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmsafety-serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": 0, "owned_by": "mmsafety"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_request_error")
        if body.get("model") != served_name:
            return _error(404, f"The model `{body.get('model')}` does not exist; this server serves `{served_name}`.",
                          "invalid_request_error", "model_not_found")
        if body.get("stream") or (body.get("n") or 1) != 1:
            return _error(400, "stream and n > 1 are not supported", "invalid_request_error")
        temperature = body.get("temperature")
        if temperature not in (None, 0, 0.0):
            return _error(400, "only greedy decoding (temperature 0) is served", "invalid_request_error")
        try:
            prompt, images = parse_messages(body.get("messages"))
        except (ValueError, AttributeError, TypeError) as e:
            return _error(400, str(e), "invalid_request_error")
        if len(images) != (0 if text_only else 1):
            wanted = "no image: this model reads text only" if text_only else "exactly one image per request"
            return _error(400, f"send {wanted} (got {len(images)})", "invalid_request_error")
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 64)
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if top is not None and not 0 <= top <= 20:
            return _error(400, "top_logprobs must be 0-20", "invalid_request_error")
        if delay_s:
            await asyncio.sleep(delay_s)
        try:
            gen, batch_size = await batcher.submit(Job(images[0] if images else None, prompt, max_tokens, top))
        except Exception as e:
            return _error(500, f"the model failed: {type(e).__name__}: {e}", "server_error")
        choice = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                  "finish_reason": "stop" if gen.finished else "length",
                  "logprobs": _logprobs_body(gen, top) if top is not None and reports_logprobs else None}
        body = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": served_name, "choices": [choice],
                "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                          "total_tokens": gen.prompt_tokens + gen.completion_tokens}}
        # How many requests shared this one's forward pass: shows batching to clients and tests.
        return JSONResponse(body, headers={"x-mmsafety-batch-size": str(batch_size)})

    return app
