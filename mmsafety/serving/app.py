"""The OpenAI chat-completions protocol over a local adapter (FastAPI): POST /v1/chat/completions
(plain or streamed as server-sent events), GET /v1/models, GET /v1/models/{id} and GET /health.

Every request field is honoured or refused with a 400 naming it (`protocol`); a client's mistake
(a bad image, max_tokens <= 0 or past the context, an unknown field) is a 400, never a 5xx, so no
client retries it. Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}, so the
official client raises its usual exceptions. docs/serving.md has the field-by-field table.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from mmsafety.serving.batcher import Batcher, Job
from mmsafety.serving.generation import (
    Generation, Row, adapter_prompt, chat_template, generate_rows, generate_with_adapter, generator_for,
    prepare_chat, prompt_limit,
)
from mmsafety.serving.protocol import ChatRequest, RequestError, parse_request


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _logprob_entries(tokens, top_logprobs: int) -> list[dict]:
    return [{**_entry(t.token, t.logprob), "top_logprobs": [_entry(s, lp) for s, lp in t.top[:top_logprobs]]}
            for t in tokens]


def _usage(gens: list[Generation]) -> dict:
    # The prompt is read once per request, whatever n is; every choice's tokens count (as OpenAI bills).
    prompt, completion = gens[0].prompt_tokens, sum(g.completion_tokens for g in gens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _vocab_size(adapter) -> int | None:
    tokenizer = getattr(adapter, "tokenizer", None)
    return len(tokenizer) if tokenizer is not None else None


def create_app(adapter, served_name: str, api_key: str | None = None, delay_s: float = 0.0,
               max_batch: int = 16, logprobs: bool = True) -> FastAPI:
    """The server for `adapter` under the model name `served_name`. `api_key`: when set, requests
    must carry it as a bearer token (401 otherwise; /health is open). `delay_s`: added to every
    completion (to measure a client against a slow server). `logprobs=False` behaves like a server
    that never returns them."""
    templated = chat_template(adapter) is not None
    text_only = getattr(adapter, "text_only", False)  # e.g. a judge classifier (mmsafety.models.causal_lm)
    vocab_size = _vocab_size(adapter)

    def run(rows: list[Row]) -> list[Generation]:
        return generate_rows(adapter, rows) if rows[0].inputs is not None else generate_with_adapter(adapter, rows)

    batcher = Batcher(run, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmsafety-serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown paths and methods, in OpenAI's shape
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", "invalid_request_error",
                      "not_found" if exc.status_code == 404 else None)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return await call_next(request)

    model_card = {"id": served_name, "object": "model", "created": 0, "owned_by": "mmsafety"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != served_name:
            return _error(404, f"The model `{model_id}` does not exist; this server serves `{served_name}`.",
                          "invalid_request_error", "model_not_found", "model")
        return model_card

    def rows_for(req: ChatRequest) -> list[Row]:
        """The request's n choices, its prompt encoded once (RequestError when it cannot be served)."""
        if templated:
            inputs = prepare_chat(adapter, req.conversation, req.images)
            prompt_tokens, image, prompt = inputs["input_ids"].shape[1], None, None
        else:
            inputs, prompt = None, adapter_prompt(req.conversation, req.images, text_only)
            image = req.images[0] if req.images else None
            prompt_tokens = _adapter_prompt_tokens(adapter, prompt)
        max_tokens = prompt_limit(adapter, prompt_tokens, req.max_tokens, "messages")
        sampled = req.decoding.temperature > 0
        return [Row(inputs, image, prompt, max_tokens, req.decoding, generator_for(req.seed, i) if sampled else None,
                    req.top_logprobs if logprobs else None, prompt_tokens) for i in range(req.n)]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not JSON: send a JSON object", "invalid_request_error", "invalid_json")
        try:
            req = parse_request(body, served_name, vocab_size)
            rows = await asyncio.to_thread(rows_for, req)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        if delay_s:
            await asyncio.sleep(delay_s)
        try:
            done = await asyncio.gather(*[batcher.submit(Job(row, row.batch_key)) for row in rows])
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except Exception as e:
            return _error(500, f"the model failed: {type(e).__name__}: {e}", "server_error")
        gens, batch_size = [g for g, _ in done], max(size for _, size in done)
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        top = rows[0].top_logprobs
        # How many choices shared this one's forward pass: shows batching to clients and tests.
        headers = {"x-mmsafety-batch-size": str(batch_size)}
        if req.stream:
            return StreamingResponse(_events(gens, reply_id, created, served_name, top, req.include_usage),
                                     media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        choices = [{"index": i, "message": {"role": "assistant", "content": g.text, "refusal": None},
                    "finish_reason": g.finish_reason,
                    "logprobs": {"content": _logprob_entries(g.tokens, top), "refusal": None} if top is not None else None}
                   for i, g in enumerate(gens)]
        return JSONResponse({"id": reply_id, "object": "chat.completion", "created": created, "model": served_name,
                             "choices": choices, "usage": _usage(gens), "system_fingerprint": None}, headers=headers)

    return app


def _adapter_prompt_tokens(adapter, prompt: str) -> int:
    from mmsafety.models.context import prompt_length

    n = prompt_length(adapter, prompt)
    if n is None and getattr(adapter, "tokenizer", None) is not None:
        n = len(adapter.tokenizer(prompt)["input_ids"])
    return n or 0


async def _events(gens: list[Generation], reply_id: str, created: int, model: str, top: int | None, include_usage: bool):
    """Server-sent events as OpenAI streams them: the role, one chunk per generated token (its text
    piece and, when asked, its logprobs), each choice's finish_reason, optionally a usage chunk with no
    choices, then [DONE]. The pieces of a choice concatenate to the plain answer's content."""
    def chunk(choices: list[dict], usage=None) -> str:
        body = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    for i, g in enumerate(gens):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
        for k, piece in enumerate(g.pieces):
            logprobs = {"content": _logprob_entries(g.tokens[k:k + 1], top), "refusal": None} if top is not None else None
            yield chunk([{"index": i, "delta": {"content": piece}, "logprobs": logprobs, "finish_reason": None}])
        yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": g.finish_reason}])
    if include_usage:
        yield chunk([], _usage(gens))
    yield "data: [DONE]\n\n"
