"""Requests to an OpenAI-compatible server through the official async `openai` client.

A background thread, started on first use, runs one event loop that owns the client, so the adapter's synchronous
`generate` can send a whole batch concurrently (at most `max_connections` in flight) from any
caller, a notebook's running loop included. The client's own retries are off: this module retries,
so that every retry is counted and malformed bodies or answers without choices are retried too.

Per request: cache lookup -> budget check -> send -> on a transient failure (429, 5xx, 408/409, a
timeout, a dropped connection, a malformed body, no choices) wait and retry, honouring Retry-After
on 429, else exponential backoff with jitter -> cache the answer. A request that exhausts its
retries, or that the server refuses (400, 422), becomes a `Failure` with the reason. A refused key
(401/403) or an unknown model (404) stops the run in one line: every request would fail alike.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import openai

from mmsafety.errors import UserError
from mmsafety.served.accounting import Accounting
from mmsafety.served.cache import ResponseCache, request_key
from mmsafety.served.settings import ServedSettings

MAX_RETRY_AFTER_S = 300.0
ANSWER_TOKENS_KEPT = 4  # a response's leading tokens kept for choice scoring  # a server asking for longer than this is not coming back within a run


@dataclass(frozen=True)
class Failure:
    """A request that got no answer: the reason, for the sample's error record."""

    reason: str


class _NotRun:
    """A request a spent budget kept from being sent."""


NOT_RUN = _NotRun()


class _Refused(Exception):
    """The server refused this one request (400, 422, ...): retrying would not help."""


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason, self.wait_s, self.detail = reason, wait_s, detail


def retry_after_seconds(headers) -> float | None:
    """Seconds a 429/503 asks to wait: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def normalise_response(response: dict) -> dict:
    """The parts of a chat completion a workload uses, in the form the cache stores. Raises
    _Retry when the body is not a usable completion (no choices, no message)."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices:
        raise _Retry("no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _Retry("malformed response", detail="message.content is not text")
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    answer_tokens = None
    if tokens:
        # The generated tokens up to the first that is not whitespace: the answer word's token, and
        # the space-like tokens some tokenizers put before it (scored as a path; see served.logprobs).
        answer_tokens = []
        for t in tokens[:ANSWER_TOKENS_KEPT]:
            top = [{"token": x.get("token"), "logprob": x.get("logprob")} for x in t.get("top_logprobs") or []]
            answer_tokens.append({"token": t.get("token"), "logprob": t.get("logprob"), "top": top})
            if (t.get("token") or "").strip():
                break
    usage = response.get("usage") or {}
    return {"content": content or "", "finish_reason": choice.get("finish_reason"),
            "answer_token_logprobs": answer_tokens,
            "usage": {"prompt_tokens": usage.get("prompt_tokens") or 0,
                      "completion_tokens": usage.get("completion_tokens") or 0}}


class ServedClient:
    """One served model: `complete(requests)` answers a batch of chat requests concurrently."""

    def __init__(self, settings: ServedSettings):
        self.settings = settings
        self.accounting = Accounting(dict(settings.price_per_million_tokens), settings.max_requests, settings.max_cost)
        self._rng = random.Random()  # backoff jitter only: spreads retries of concurrent requests
        self._cache = ResponseCache(settings.cache_path) if settings.cache_path else None
        # The worker (an event loop on its own thread, owning the openai client) starts on first use:
        # building a client (a config check, a describe()) starts no thread.
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client = self._semaphore = None
        self._closed = False

    # -- the event loop thread -------------------------------------------------------
    def _started(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("this ServedClient is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mmsafety-served", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._client = asyncio.run_coroutine_threadsafe(self._make_client(), loop).result()
                self._semaphore = asyncio.run_coroutine_threadsafe(self._make_semaphore(), loop).result()
            return self._loop

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._started()).result()

    async def _make_client(self):
        s = self.settings
        # A connection pool no larger than the requests in flight: httpcore scans every pooled
        # connection per request (the default pool of 1000 cost ~3 ms of CPU per request).
        limits = httpx.Limits(max_connections=s.max_connections, max_keepalive_connections=s.max_connections)
        return openai.AsyncOpenAI(base_url=s.base_url, api_key=s.api_key(), timeout=s.timeout_s, max_retries=0,
                                  http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=s.timeout_s))

    async def _make_semaphore(self):
        return asyncio.Semaphore(self.settings.max_connections)

    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        try:
            if loop is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), loop).result()
        finally:
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=5)
                loop.close()
            if self._cache is not None:
                self._cache.close()

    # -- what never leaves the process ------------------------------------------------
    def scrub(self, text: str) -> str:
        """A server's message with the key blanked out (some echo part of a refused key)."""
        key = self.settings.api_key()
        text = " ".join(str(text).split())  # one line
        return text.replace(key, "***") if key and key != "not-set" else text

    # -- before the run ---------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse, in one line, an unreachable server, a refused key or a model the server doesn't
        serve, before the first real request (GET /models; servers without it are let through)."""
        self._call(self._preflight())

    async def _preflight(self) -> None:
        s = self.settings
        try:
            page = await asyncio.wait_for(self._client.models.list(), timeout=s.timeout_s)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise self._key_refused(e.status_code) from None
        except openai.NotFoundError:
            return  # no /models endpoint: the first request will tell
        except (openai.APIConnectionError, asyncio.TimeoutError) as e:
            why = "timed out" if isinstance(e, (openai.APITimeoutError, asyncio.TimeoutError)) else "connection failed"
            raise UserError(f"cannot reach model.base_url={s.base_url} ({why}): start the server, "
                            f"or fix model.base_url (it usually ends with /v1)") from None
        except openai.APIStatusError:
            return  # a listing problem is not a serving problem
        served = [m.id for m in getattr(page, "data", []) or []]
        if served and s.model not in served:
            raise UserError(f"model.name_or_path={s.model}: the server at {s.base_url} does not serve it; it serves "
                            f"{', '.join(served[:20])}{' ...' if len(served) > 20 else ''}")

    def _key_refused(self, status: int) -> UserError:
        s = self.settings
        where = (f"the key in ${s.api_key_env}" if s.key_is_set() else f"no key (${s.api_key_env} is not set)")
        return UserError(f"the server at {s.base_url} refused {where} ({status}): set {s.api_key_env} to a valid "
                         f"key, or model.api_key_env to the variable that holds it")

    # -- the run ----------------------------------------------------------------------
    def complete(self, requests: list[tuple[dict, dict]]) -> list:
        """Answer each (key_request, build_wire): the first is what the cache keys on (images by
        fingerprint); the second, a zero-argument callable, builds the request sent (images
        encoded), only on a cache miss. Returns, in order, normalised responses, `Failure`s, or
        NOT_RUN where a spent budget kept the request from being sent."""
        return self._call(self._complete_all(requests))

    async def _complete_all(self, requests) -> list:
        keys = [request_key(key_req) for key_req, _ in requests]
        unique = {}  # the same request twice in a batch is sent once
        for key, (_, build) in zip(keys, requests):
            unique.setdefault(key, build)
        try:
            async with asyncio.TaskGroup() as group:  # a fatal error (refused key, unknown model) cancels the rest
                tasks = {key: group.create_task(self._complete_one(key, build)) for key, build in unique.items()}
        except ExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        return [tasks[key].result() for key in keys]

    async def _complete_one(self, key: str, build_wire):
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self.accounting.cache_hits += 1
                return cached
        async with self._semaphore:
            wire = None
            attempt = 0
            while True:
                try:
                    self.accounting.check_budget()
                except UserError:
                    return NOT_RUN
                if wire is None:
                    wire = build_wire()  # encodes the image: only on a miss
                self.accounting.requests += 1
                try:
                    response = await self._send(wire)
                except _Retry as r:
                    if attempt >= self.settings.max_retries:
                        self.accounting.failed += 1
                        detail = f": {r.detail}" if r.detail else ""
                        return Failure(self.scrub(f"{r.reason} after {attempt + 1} attempts{detail}"))
                    self.accounting.add_retry(r.reason)
                    await asyncio.sleep(self._wait(r, attempt))
                    attempt += 1
                    continue
                except _Refused as refused:  # this sample only
                    self.accounting.failed += 1
                    return Failure(str(refused))
                self.accounting.answered += 1
                self.accounting.add_usage(response["usage"])
                if self._cache is not None:
                    self._cache.put(key, response)
                return response

    def _wait(self, retry: _Retry, attempt: int) -> float:
        if retry.wait_s is not None:
            return min(retry.wait_s, MAX_RETRY_AFTER_S)
        s = self.settings
        return min(s.max_backoff_s, s.backoff_s * 2 ** attempt) * self._rng.uniform(0.5, 1.0)

    async def _send(self, wire: dict) -> dict:
        try:
            async with asyncio.timeout(self.settings.timeout_s * 1.5):  # a body that trickles in forever
                # POST through the client (auth, base URL, error types) without its typed-parameter
                # transform, which walks every message part: ~5 ms of CPU per request with an image.
                raw = await self._client.post("/chat/completions", body=wire, cast_to=httpx.Response)
            body = raw.content
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise self._key_refused(e.status_code) from None
        except openai.NotFoundError as e:
            raise UserError(f"model.name_or_path={self.settings.model}: the server at {self.settings.base_url} "
                            f"answered 404 ({self.scrub(e.message)[:200]}); check the model name and model.base_url"
                            ) from None
        except openai.RateLimitError as e:
            raise _Retry("429 rate limited", retry_after_seconds(e.response.headers)) from None
        except openai.InternalServerError as e:
            raise _Retry(f"{e.status_code} server error", retry_after_seconds(e.response.headers)) from None
        except openai.APIStatusError as e:
            if e.status_code in (408, 409):
                raise _Retry(f"{e.status_code} server busy") from None
            raise _Refused(self.scrub(f"{e.status_code} refused: {e.message}")[:300]) from None
        except (openai.APITimeoutError, TimeoutError):
            raise _Retry("timeout") from None
        except openai.APIConnectionError:
            raise _Retry("connection error") from None
        except openai.APIResponseValidationError:
            raise _Retry("malformed response") from None
        try:
            parsed = json.loads(body)
        except ValueError:
            raise _Retry("malformed response", detail="body is not JSON") from None
        return normalise_response(parsed)
