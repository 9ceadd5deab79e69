"""The OpenAI chat-completions protocol over a local adapter (FastAPI): POST /v1/chat/completions
(plain or streamed as server-sent events), GET /v1/models, GET /v1/models/{id} and GET /health.

Every request field is honoured or refused with a 400 naming it (`protocol`); a client's mistake
(a bad image, max_tokens <= 0 or past the context, an unknown field) is a 400, never a 5xx, so no
client retries it. Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}, so the
official client raises its usual exceptions. docs/serving.md has the field-by-field table.

Hostile and unlucky clients (`protocol.Limits`, each checked before any model work): a body past
its size limit is a 413 before it is read whole, a full server a 429 with Retry-After, JSON that is
malformed or nested too deep, too many messages or parts, an image with too many pixels and a
prompt past the context are 400s; a client that hangs up has its work dropped (`batcher`). Each
refusal is one log line, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
import warnings
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mmsafety.serving.batcher import Batcher, Job
from mmsafety.serving.generation import (
    Generation, Row, adapter_prompt, chat_template, check_prompt_size, generate_rows, generate_with_adapter,
    generator_for, prepare_chat, prompt_limit,
)
from mmsafety.models.context import prompt_length
from mmsafety.serving.protocol import ChatRequest, Limits, RequestError, load_body, parse_request
from mmsafety.serving.tools import parse_tools, tool_calls_of, tool_format_for

log = logging.getLogger("mmsafety.serve")


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    log.warning("%d %s%s: %s", status, code or kind, f" ({param})" if param else "", message[:300])
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status,
                        headers=headers)


def _refused(e: RequestError, headers: dict | None = None) -> JSONResponse:
    return _error(e.status, e.message, e.kind, e.code, e.param, headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (_TooLarge past it)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (call once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
               max_batch: int = 16, logprobs: bool = True, limits: Limits = Limits(), tool_format: str = "auto") -> FastAPI:
    """The server for `adapter` under the model name `served_name`. `api_key`: when set, requests
    must carry it as a bearer token (401 otherwise; /health is open). `delay_s`: added to every
    completion (to measure a client against a slow server). `logprobs=False` behaves like a server
    that never returns them. `limits`: what one request may ask for (protocol.Limits). `tool_format`: how
    the model writes tool calls (mmsafety.agents.formats; "auto": hermes when its template writes
    <tool_call>, else fu)."""
    templated = chat_template(adapter) is not None
    fmt = tool_format_for(chat_template(adapter), tool_format)
    renders_tools = "tools" in (chat_template(adapter) or "")  # the template declares tools to the model
    text_only = getattr(adapter, "text_only", False)  # e.g. a judge classifier (mmsafety.models.causal_lm)
    vocab_size = _vocab_size(adapter)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # --max-image-pixels refuses them by name

    def run(rows: list[Row]) -> list[Generation]:
        return generate_rows(adapter, rows) if rows[0].inputs is not None else generate_with_adapter(adapter, rows)

    batcher = Batcher(run, max_batch=max_batch, long_tokens=limits.long_tokens, queue_timeout_s=limits.queue_timeout_s)
    state = {"admitted": 0, "long": 0, "draining": False, "served": 0, "refused": 0, "seconds": []}
    max_long = max(1, limits.max_queue // 2)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmsafety-serve", lifespan=lifespan)
    app.state.batcher, app.state.counters = batcher, state

    def drain(grace_s: float) -> None:
        """Stop taking requests; what is still running when `grace_s` is nearly over ends with a 503
        (called on the event loop when SIGTERM arrives; cli.py)."""
        state["draining"] = True
        margin = min(1.0, grace_s / 4)  # time for the model calls to end at their next token and reply
        asyncio.get_running_loop().call_later(max(0.0, grace_s - margin), batcher.abort,
                                              "the server is shutting down")

    app.state.drain = drain

    def retry_after() -> str:
        """Seconds until a slot is likely free: the recent mean request time times the queue's depth per batch."""
        recent = state["seconds"][-50:]
        mean = sum(recent) / len(recent) if recent else 1.0
        return str(max(1, math.ceil(mean * state["admitted"] / max(1, max_batch))))

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
        stats = batcher.stats
        return {"status": "draining" if state["draining"] else "ok", "model": served_name,
                "requests": {"in_server": state["admitted"], "long": state["long"], "served": state["served"],
                             "refused": state["refused"]},
                "jobs": {"waiting": stats.waiting, "running": stats.running, "done": stats.done,
                         "cancelled": stats.cancelled, "timed_out": stats.timed_out, "aborted": stats.aborted}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != served_name:
            return _error(404, f"The model `{model_id}` does not exist; this server serves `{served_name}`.",
                          "invalid_request_error", "model_not_found", "model")
        return model_card

    def rows_for(raw: bytes) -> tuple[ChatRequest, list[Row]]:
        """The request parsed and its n choices, its prompt encoded once (RequestError when it cannot
        be served). Runs on a worker thread: decoding images and tokenizing stay off the event loop."""
        body = load_body(raw, limits)
        tools = parse_tools(body) if isinstance(body, dict) else None
        req = parse_request(body, served_name, vocab_size, limits, fmt if tools is not None else None)
        req.tools = tools
        texts = [p["text"] for m in req.conversation for p in m["content"] if p["type"] == "text"]
        # Refused before the template sees a 5 MB prompt
        check_prompt_size(adapter, texts, req.max_tokens, max_param=req.max_tokens_param)
        if templated:
            declared = tools.tools if tools is not None and tools.offered and renders_tools else None
            inputs = prepare_chat(adapter, req.conversation, req.images, declared)
            prompt_tokens, image, prompt = inputs["input_ids"].shape[1], None, None
        else:
            inputs, prompt = None, adapter_prompt(req.conversation, req.images, text_only)
            image = req.images[0] if req.images else None
            prompt_tokens = _adapter_prompt_tokens(adapter, prompt)
        max_tokens = prompt_limit(adapter, prompt_tokens, req.max_tokens, "messages", req.max_tokens_param)
        sampled = req.decoding.temperature > 0
        return req, [Row(inputs, image, prompt, max_tokens, req.decoding, generator_for(req.seed, i) if sampled else None,
                         req.top_logprobs if logprobs else None, prompt_tokens) for i in range(req.n)]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        # Admission first, from the headers only: a full or closing server and an oversized body are
        # refused before anything is read.
        if state["draining"] or batcher.aborting:
            return _error(503, "the server is shutting down; send the request to another server or retry", "server_error",
                          "server_shutting_down", headers={"retry-after": "1"})
        if state["admitted"] >= limits.max_queue:
            state["refused"] += 1
            return _error(429, f"the server holds {state['admitted']} requests, its limit (--max-queue={limits.max_queue}); "
                          "retry after the Retry-After header's seconds", "rate_limit_error", "queue_full",
                          headers={"retry-after": retry_after()})
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            state["refused"] += 1
            return _error(413, f"the request body is {int(length)} bytes; at most {limits.max_body_bytes} are accepted "
                          "(--max-body-mb)", "invalid_request_error", "request_too_large",
                          headers={"connection": "close"})
        state["admitted"] += 1
        started = time.monotonic()
        try:
            return await _complete(request, started)
        finally:
            state["admitted"] -= 1

    async def _complete(request: Request, started: float):
        try:
            raw = await asyncio.wait_for(_read_body(request, limits.max_body_bytes), limits.body_timeout_s)
        except asyncio.TimeoutError:
            state["refused"] += 1
            return _error(408, f"the request body was not received whole within {limits.body_timeout_s:g} s "
                          "(--body-timeout-s)", "invalid_request_error", "request_timeout", headers={"connection": "close"})
        except ClientDisconnect:  # hung up while sending: nothing to answer
            log.info("client disconnected while sending its request")
            return JSONResponse({}, status_code=499)
        except _TooLarge as e:  # a chunked body, no Content-Length: refused when it passes the limit
            state["refused"] += 1
            return _error(413, f"the request body passed {limits.max_body_bytes} bytes (read {e.args[0]} so far); at most "
                          f"{limits.max_body_bytes} are accepted (--max-body-mb)", "invalid_request_error",
                          "request_too_large", headers={"connection": "close"})
        try:
            req, rows = await asyncio.to_thread(rows_for, raw)
        except RequestError as e:
            state["refused"] += 1
            return _refused(e)
        del raw
        long = rows[0].max_tokens > limits.long_tokens
        if long and state["long"] >= max_long:
            state["refused"] += 1
            return _error(429, f"the server holds {state['long']} requests allowed more than {limits.long_tokens} new "
                          f"tokens, its limit for them (half of --max-queue={limits.max_queue}); retry after the "
                          f"Retry-After header's seconds, or ask for fewer {req.max_tokens_param}", "rate_limit_error",
                          "queue_full",
                          headers={"retry-after": retry_after()})
        state["long"] += long
        try:
            return await _run(request, req, rows, started)
        finally:
            state["long"] -= long

    async def _run(request: Request, req: ChatRequest, rows: list[Row], started: float):
        if delay_s:
            await asyncio.sleep(delay_s)
        jobs = [Job(row, row.batch_key, cost=row.max_tokens) for row in rows]
        for job, row in zip(jobs, rows):
            row.cancel = job.cancel  # the running generate checks it at every token
        work = asyncio.ensure_future(asyncio.gather(*[batcher.submit(job) for job in jobs]))
        hangup = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client went away: drop its jobs, queued or running
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                log.info("client disconnected: %d choice(s) dropped", len(jobs))
                return JSONResponse({}, status_code=499)  # nobody reads it
            done = work.result()
        except RequestError as e:
            batcher.drop(jobs)  # the request's other choices, if any, are not wanted any more
            headers = {"retry-after": retry_after()} if e.status in (429, 503) else None
            return _refused(e, headers)
        except Exception as e:
            batcher.drop(jobs)
            return _error(500, f"the model failed: {type(e).__name__}: {e}", "server_error")
        finally:
            hangup.cancel()
        state["served"] += 1
        state["seconds"].append(time.monotonic() - started)
        del state["seconds"][:-100]
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
        if req.tools is not None and req.tools.offered:  # the model's calls, parsed from its own format
            for i, choice in enumerate(choices):
                content, calls = tool_calls_of(gens[i].text, fmt, req.tools, i)
                if calls:
                    choice["message"].update(content=content, tool_calls=calls)
                    choice["finish_reason"] = "tool_calls"
        return JSONResponse({"id": reply_id, "object": "chat.completion", "created": created, "model": served_name,
                             "choices": choices, "usage": _usage(gens), "system_fingerprint": None}, headers=headers)

    return app


def _adapter_prompt_tokens(adapter, prompt: str) -> int:
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
