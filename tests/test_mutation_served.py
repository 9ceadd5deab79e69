"""The served-model client (mmsafety/served/client.py) and its accounting (accounting.py) against a scripted
server in process: the official `openai` client over an `httpx.MockTransport`, so each test states what
the server answers to each attempt and checks what the client returns and counts. No port, no model,
milliseconds per test: written for `make mutation` (its `served_accounting` group runs no slow test, and
the other client tests start a real server). The expected counts are worked out from the scripted
answers, not read from the client."""

from __future__ import annotations

import asyncio
import json
import math
import random

import httpx
import openai
import pytest

from mmsafety.errors import UserError
from mmsafety.served.accounting import Accounting, accumulate
from mmsafety.served.client import (MAX_RETRY_AFTER_S, NOT_RUN, Failure, ServedClient, _Retry, normalise_response,
                                    retry_after_seconds)
from mmsafety.served.errors import BudgetExhausted
from mmsafety.served.settings import settings_from_config

KEY_ENV = "MMSAFETY_MUTATION_TEST_KEY"


def completion(content="Yes", prompt_tokens=10, completion_tokens=2, logprobs=None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


class ScriptedServer:
    """Answers each request to /chat/completions by the script of its first message's text: a list of
    answers, one per attempt (the last repeats). An answer is a dict (a completion), a status code,
    (status, headers), bytes (a raw 200 body), an httpx transport error class (raised), or a float (seconds
    to wait before answering). `models_status` scripts GET /models the same way. Records every request it saw and the most in flight."""

    def __init__(self, scripts: dict[str, list], models=None, models_status: int = 200, delay_s: float = 0.0):
        self.scripts, self.models, self.models_status, self.delay_s = scripts, models, models_status, delay_s
        self.seen: list[str] = []
        self.headers: list[httpx.Headers] = []
        self.in_flight = self.most_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if request.url.path.endswith("/models"):
            if isinstance(self.models_status, type):
                raise self.models_status("scripted", request=request)
            if isinstance(self.models_status, float):
                await asyncio.sleep(self.models_status)
                return httpx.Response(200, json={"object": "list", "data": []})
            if self.models_status != 200:
                return httpx.Response(self.models_status, json={"error": {"message": "nope"}})
            return httpx.Response(200, json={"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                                           "owned_by": "x"} for m in self.models]})
        if request.url.host != "scripted.test" or request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        body = json.loads(request.content)
        text = body["messages"][0]["content"]
        attempt = sum(t == text for t in self.seen)
        self.seen.append(text)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        script = self.scripts[text]
        answer = script[min(attempt, len(script) - 1)]
        if isinstance(answer, type) and issubclass(answer, httpx.TransportError):
            raise answer(f"scripted {answer.__name__}", request=request)
        if isinstance(answer, float):  # a server that takes this long to answer at all
            await asyncio.sleep(answer)
            return httpx.Response(200, json=completion("late"))
        if isinstance(answer, dict):
            return httpx.Response(200, json=answer)
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"content-type": "application/json"})
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, json={"error": {"message": f"scripted {status} for {text}"}}, headers=headers)


@pytest.fixture
def serve(monkeypatch, tmp_path):
    """serve(server, **settings) -> a ServedClient whose HTTP goes to `server`; closed after the test."""
    clients = []

    def make(server: ScriptedServer, **settings):
        def transport_client(limits=None, timeout=None):
            make.http_args = {"limits": limits, "timeout": timeout}
            return httpx.AsyncClient(transport=httpx.MockTransport(server), timeout=timeout)

        monkeypatch.setattr(openai, "DefaultAsyncHttpxClient", transport_client)
        cfg = {"name_or_path": "m", "base_url": "http://scripted.test/v1", "cache": False, "api_key_env": KEY_ENV,
               "backoff_s": 0.001, "max_backoff_s": 0.002, **settings}
        client = ServedClient(settings_from_config(cfg))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def request(text: str, built: list | None = None):
    """A (key_request, build_wire) pair; `built` collects each call of build_wire."""
    def build():
        if built is not None:
            built.append(text)
        return {"model": "m", "messages": [{"role": "user", "content": text}]}
    return {"model": "m", "text": text}, build


def test_each_transient_fault_is_retried_and_counted_by_its_reason(serve):
    server = ScriptedServer({
        "a": [(429, {"retry-after-ms": "1"}), completion("A", 7, 1)],
        "b": [500, 503, completion("B", 5, 2)],
        "c": [408, 409, completion("C", 3, 3)],
        "d": [b"not json at all", completion("D", 1, 1)],
        "e": [{"choices": []}, completion("E", 2, 0)],
    })
    client = serve(server, max_retries=3)
    built = []
    results = client.complete([request(t, built) for t in "abcde"])
    assert [r["content"] for r in results] == ["A", "B", "C", "D", "E"]
    assert sorted(built) == list("abcde")  # each wire request built once, on its first attempt
    acc = client.accounting
    assert acc.requests == 2 + 3 + 3 + 2 + 2 == len(server.seen)
    assert acc.retries == 1 + 2 + 2 + 1 + 1
    assert acc.retry_reasons == {"429 rate limited": 1, "500 server error": 1, "503 server error": 1,
                                 "408 server busy": 1, "409 server busy": 1, "malformed response": 1, "no choices": 1}
    assert (acc.answered, acc.failed, acc.cache_hits) == (5, 0, 0)
    assert (acc.prompt_tokens, acc.completion_tokens) == (7 + 5 + 3 + 1 + 2, 1 + 2 + 3 + 1 + 0)
    assert results[1] == {"content": "B", "finish_reason": "stop", "answer_token_logprobs": None,
                          "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def test_timeouts_and_dropped_connections_are_retried_by_their_reason(serve):
    server = ScriptedServer({"t": [httpx.ReadTimeout, completion("T")], "c": [httpx.ConnectError, completion("C")],
                             "slow": [5.0, completion("S")], "ok": [completion("O")]})
    client = serve(server, max_retries=1, timeout_s=0.2)
    results = client.complete([request(t) for t in ("t", "c", "slow", "ok")])
    assert [r["content"] for r in results] == ["T", "C", "S", "O"]  # the slow first answer was given up on
    assert client.accounting.retry_reasons == {"timeout": 2, "connection error": 1}
    assert (client.accounting.requests, client.accounting.retries) == (7, 3)


def test_an_answer_is_awaited_one_and_a_half_timeouts_then_given_up(serve):
    """A body that trickles in is cut at 1.5 x timeout_s (the transport's own timeout is per read)."""
    server = ScriptedServer({"in_time": [0.4], "too_slow": [1.1, completion("again")]})
    client = serve(server, max_retries=1, timeout_s=0.5)
    in_time, too_slow = client.complete([request("in_time"), request("too_slow")])
    assert in_time["content"] == "late" and too_slow["content"] == "again"
    assert server.seen.count("in_time") == 1 and client.accounting.retry_reasons == {"timeout": 1}


def test_retry_after_is_honoured_on_429_and_503_instead_of_the_backoff(serve):
    import time

    server = ScriptedServer({"a": [(429, {"retry-after-ms": "10"}), completion("A")],
                             "b": [(503, {"retry-after-ms": "10"}), completion("B")]})
    client = serve(server, max_retries=1, backoff_s=4.0, max_backoff_s=4.0)  # the backoff would wait 2-4 s
    start = time.monotonic()
    assert [r["content"] for r in client.complete([request("a"), request("b")])] == ["A", "B"]
    assert time.monotonic() - start < 1.5


def test_long_server_messages_are_cut_to_a_line_of_fixed_length(serve):
    async def verbose(request):  # a 1000-character message with each refusal
        status = 400 if b'"bad"' in request.content else 404
        return httpx.Response(status, json={"error": {"message": "y" * 1000}})

    client = serve(verbose)
    failure, = client.complete([request("bad")])
    assert len(failure.reason) == 300 and failure.reason.startswith("400 refused: ")
    with pytest.raises(UserError) as e:
        client.complete([request("gone")])
    quoted = str(e.value).split("answered 404 (", 1)[1].rsplit("); check the model name", 1)[0]
    assert len(quoted) == 200 and quoted.endswith("y" * 50)


def test_a_request_that_exhausts_its_retries_is_a_failure_with_its_reason(serve):
    server = ScriptedServer({"a": [500], "b": [b"{oops"], "ok": [completion()]})
    client = serve(server, max_retries=2)
    a, b, ok = client.complete([request("a"), request("b"), request("ok")])
    assert a == Failure("500 server error after 3 attempts")
    assert b == Failure("malformed response after 3 attempts: body is not JSON")
    assert ok["content"] == "Yes"
    acc = client.accounting
    assert (acc.requests, acc.retries, acc.failed, acc.answered) == (7, 4, 2, 1)
    zero = serve(ScriptedServer({"a": [500]}), max_retries=0)
    assert zero.complete([request("a")]) == [Failure("500 server error after 1 attempts")]
    assert (zero.accounting.requests, zero.accounting.retries, zero.accounting.failed) == (1, 0, 1)


def test_a_refused_request_fails_at_once_with_the_servers_reason_and_no_key(serve, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-secret-123")
    server = ScriptedServer({"bad": [400], "also": [422], "ok": [completion()]})
    client = serve(server, max_retries=5)
    bad, also, ok = client.complete([request("bad"), request("also"), request("ok")])
    assert isinstance(bad, Failure) and bad.reason.startswith("400 refused: ") and "scripted 400 for bad" in bad.reason
    assert isinstance(also, Failure) and also.reason.startswith("422 refused: ")
    assert ok["content"] == "Yes"
    assert server.seen.count("bad") == 1 and server.seen.count("also") == 1  # not retried
    assert (client.accounting.failed, client.accounting.retries, client.accounting.answered) == (2, 0, 1)
    assert all(h["authorization"] == "Bearer sk-secret-123" for h in server.headers)


def test_a_refused_key_and_an_unknown_model_stop_the_run_in_one_line(serve, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    for status in (401, 403):
        client = serve(ScriptedServer({"a": [status]}))
        with pytest.raises(UserError, match=rf"refused no key \(\${KEY_ENV} is not set\) \({status}\): set {KEY_ENV}"):
            client.complete([request("a")])
    monkeypatch.setenv(KEY_ENV, "sk-x")
    client = serve(ScriptedServer({"a": [401]}))
    with pytest.raises(UserError, match=rf"refused the key in \${KEY_ENV} \(401\)"):
        client.complete([request("a")])
    client = serve(ScriptedServer({"a": [404]}))
    with pytest.raises(UserError, match=r"model.name_or_path=m: the server at http://scripted.test/v1 answered 404 "
                                        r"\(.*scripted 404 for a.*\); check the model name"):
        client.complete([request("a")])


def test_a_spent_budget_keeps_the_rest_of_the_batch_unsent(serve):
    server = ScriptedServer({t: [completion()] for t in "abcd"})
    client = serve(server, max_requests=2, max_connections=1)
    results = client.complete([request(t) for t in "abcd"])
    assert sum(r is NOT_RUN for r in results) == 2 and len(server.seen) == 2
    assert client.accounting.requests == 2 and client.accounting.answered == 2
    # A retry counts against the budget too: one request, failing once, uses both.
    server = ScriptedServer({"a": [500, completion()], "b": [completion()]})
    client = serve(server, max_requests=2, max_connections=1)
    a, b = client.complete([request("a"), request("b")])
    assert a["content"] == "Yes" and b is NOT_RUN and client.accounting.requests == 2


def test_cached_answers_are_free_and_identical(serve, tmp_path):
    server = ScriptedServer({t: [completion(t.upper())] for t in "ab"})
    client = serve(server, cache=True, cache_path=str(tmp_path / "c.sqlite"))
    first = client.complete([request("a"), request("b")])
    built = []
    again = client.complete([request("a", built), request("b", built)])
    assert again == first and built == [] and len(server.seen) == 2
    assert (client.accounting.cache_hits, client.accounting.requests, client.accounting.answered) == (2, 2, 2)
    client.close()
    other = serve(server, cache=True, cache_path=str(tmp_path / "c.sqlite"))  # persists across clients
    assert other.complete([request("a")]) == first[:1] and len(server.seen) == 2
    # A failure is not cached: it is asked again next time.
    failing = ScriptedServer({"x": [400, completion("X")]})
    client = serve(failing, cache=True, cache_path=str(tmp_path / "d.sqlite"))
    assert isinstance(client.complete([request("x")])[0], Failure)
    assert client.complete([request("x")])[0]["content"] == "X"


def test_the_http_client_pools_max_connections_and_times_out_each_attempt(serve):
    client = serve(ScriptedServer({"a": [completion()]}), max_connections=3, timeout_s=7.5)
    client.complete([request("a")])
    assert serve.http_args["limits"] == httpx.Limits(max_connections=3, max_keepalive_connections=3)
    assert serve.http_args["timeout"] == 7.5
    assert client._client.timeout == 7.5 and str(client._client.base_url) == "http://scripted.test/v1/"


def test_the_price_table_and_the_cost_budget_reach_the_accounting(serve):
    server = ScriptedServer({t: [completion(prompt_tokens=600_000, completion_tokens=0)] for t in "abc"})
    client = serve(server, price_per_million_tokens={"prompt": 1.0, "completion": 2.0}, max_cost=1.0,
                   max_connections=1)
    results = client.complete([request(t) for t in "abc"])
    # 0.6 spent after the first, 1.2 after the second: the third is not sent.
    assert [r is NOT_RUN for r in results] == [False, False, True]
    assert client.accounting.cost == pytest.approx(1.2)


def test_at_most_max_connections_requests_are_in_flight(serve):
    server = ScriptedServer({str(i): [completion()] for i in range(9)}, delay_s=0.2)  # long enough to overlap under load
    client = serve(server, max_connections=3)
    client.complete([request(str(i)) for i in range(9)])
    assert server.most_in_flight == 3


def test_preflight_refuses_a_model_the_server_does_not_serve_and_lets_the_rest_through(serve, monkeypatch):
    serve(ScriptedServer({}, models=["m", "other"])).preflight()
    serve(ScriptedServer({}, models=[])).preflight()           # an empty listing says nothing
    serve(ScriptedServer({}, models_status=404)).preflight()   # no /models endpoint
    serve(ScriptedServer({}, models_status=500)).preflight()   # a listing problem is not a serving problem
    with pytest.raises(UserError, match=r"model.name_or_path=m: the server at http://scripted.test/v1 does not serve "
                                        r"it; it serves a, b$"):
        serve(ScriptedServer({}, models=["a", "b"])).preflight()
    many = [f"x{i}" for i in range(25)]
    with pytest.raises(UserError, match=r"it serves x0, x1, .*, x19 \.\.\.$") as e:
        serve(ScriptedServer({}, models=many)).preflight()
    assert "x20" not in str(e.value)
    with pytest.raises(UserError, match=r"it serves x0, .*, x19 \.\.\.$"):  # 21: one left out
        serve(ScriptedServer({}, models=[f"x{i}" for i in range(21)])).preflight()
    twenty = [f"x{i}" for i in range(20)]
    with pytest.raises(UserError, match=r"it serves x0, x1, .*, x19$"):  # all of them: no " ..."
        serve(ScriptedServer({}, models=twenty)).preflight()
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match=r"refused no key .* \(401\)"):
        serve(ScriptedServer({}, models_status=401)).preflight()
    with pytest.raises(UserError, match=r"cannot reach model.base_url=http://scripted.test/v1 \(connection failed\): "
                                        r"start the server, or fix model.base_url"):
        serve(ScriptedServer({}, models_status=httpx.ConnectError)).preflight()
    with pytest.raises(UserError, match=r"cannot reach model.base_url=http://scripted.test/v1 \(timed out\)"):
        serve(ScriptedServer({}, models_status=httpx.ReadTimeout)).preflight()
    with pytest.raises(UserError, match=r"\(timed out\)"):  # a listing that never comes: given up after timeout_s
        serve(ScriptedServer({}, models_status=5.0), timeout_s=0.2).preflight()


def test_backoff_doubles_with_jitter_up_to_its_cap_and_retry_after_is_capped(serve):
    client = serve(ScriptedServer({}), backoff_s=0.5, max_backoff_s=30.0)
    client._rng = random.Random(1)
    for attempt in range(10):
        base = min(30.0, 0.5 * 2 ** attempt)
        waits = [client._wait(_Retry("x"), attempt) for _ in range(50)]
        assert all(base / 2 <= w <= base for w in waits), attempt
        assert max(waits) - min(waits) > base / 10  # jittered, not fixed
    assert client._wait(_Retry("429", wait_s=2.0), 7) == 2.0
    assert client._wait(_Retry("429", wait_s=10_000.0), 0) == MAX_RETRY_AFTER_S == 300.0


def test_retry_after_headers_in_every_form():
    assert retry_after_seconds(None) is None
    assert retry_after_seconds({"retry-after-ms": "-5"}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"retry-after": "not a date"}) is None
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=100), usegmt=True)
    assert 95 <= retry_after_seconds({"retry-after": later}) <= 100


def test_normalise_keeps_the_answer_tokens_up_to_the_first_word():
    def tok(token, lp):
        return {"token": token, "logprob": lp, "top_logprobs": [{"token": token, "logprob": lp, "bytes": None}]}

    spaced = normalise_response(completion(logprobs=[tok(" ", -0.1), tok("\n", -0.2), tok("Yes", -0.3), tok("!", -1.0)]))
    assert [t["token"] for t in spaced["answer_token_logprobs"]] == [" ", "\n", "Yes"]
    assert spaced["answer_token_logprobs"][2] == {"token": "Yes", "logprob": -0.3,
                                                  "top": [{"token": "Yes", "logprob": -0.3}]}
    blank = normalise_response(completion(logprobs=[tok(" ", -0.1)] * 6))
    assert len(blank["answer_token_logprobs"]) == 4  # at most ANSWER_TOKENS_KEPT
    word = normalise_response(completion(logprobs=[tok("No", -0.5), tok(".", -0.1)]))
    assert [t["token"] for t in word["answer_token_logprobs"]] == ["No"]
    assert normalise_response(completion(logprobs=[]))["answer_token_logprobs"] is None
    odd = completion()
    odd["choices"][0]["logprobs"] = ["not", "a", "mapping"]
    assert normalise_response(odd)["answer_token_logprobs"] is None
    unnamed = normalise_response(completion(logprobs=[{"token": None, "logprob": -2.0}, tok("Yes", -0.3)]))
    assert [t["token"] for t in unnamed["answer_token_logprobs"]] == [None, "Yes"]  # a nameless token is no word
    with pytest.raises(_Retry) as e:
        normalise_response(completion(content=["a", "list"]))
    assert e.value.reason == "malformed response" and e.value.detail == "message.content is not text"
    for body in (None, [], "text", {"choices": None}):
        with pytest.raises(_Retry, match="no choices"):
            normalise_response(body)
    bare = normalise_response({"choices": [{}]})
    assert bare == {"content": "", "finish_reason": None, "answer_token_logprobs": None,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0}}


def test_scrub_blanks_the_key_and_makes_one_line(serve, monkeypatch):
    client = serve(ScriptedServer({}))
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert client.scrub("a\n  not-set\tb") == "a not-set b"  # the placeholder is not a key
    monkeypatch.setenv(KEY_ENV, "sk-abc")
    assert client.scrub("bad key sk-abc\nretry") == "bad key *** retry"
    assert client.scrub(404) == "404"


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")  # built before the refusal
def test_a_closed_client_refuses_work_and_closing_twice_is_harmless(serve):
    client = serve(ScriptedServer({"a": [completion()]}))
    assert client._thread is None  # nothing starts before the first request
    assert client.complete([request("a")])[0]["content"] == "Yes"
    thread = client._thread
    # A daemon thread, so a process that never closes its client still exits; named for thread dumps.
    assert thread.daemon is True and thread.name == "mmsafety-served"
    client.close()
    client.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        client.complete([request("a")])


# -- accounting ---------------------------------------------------------------------------------

def test_cost_is_per_million_tokens_of_each_kind_and_none_without_a_price_table():
    acc = Accounting({"prompt": 3.0, "completion": 15.0})
    acc.add_usage({"prompt_tokens": 2_000_000, "completion_tokens": 100_000})
    acc.add_usage({"prompt_tokens": None, "completion_tokens": 50_000})
    acc.add_usage(None)
    assert (acc.prompt_tokens, acc.completion_tokens) == (2_000_000, 150_000)
    assert acc.cost == pytest.approx(2 * 3.0 + 0.15 * 15.0)
    assert Accounting({"completion": 1.0}, prompt_tokens=10**6, completion_tokens=10**6).cost == pytest.approx(1.0)
    assert Accounting().cost is None and Accounting().as_dict()["cost"] is None
    assert Accounting().as_dict()["price_per_million_tokens"] is None
    d = Accounting({"prompt": 1.0}, prompt_tokens=500_000).as_dict()
    assert d["cost"] == pytest.approx(0.5) and d["price_per_million_tokens"] == {"prompt": 1.0}


def test_budgets_stop_at_the_limit_not_one_after():
    Accounting(max_requests=1).check_budget()
    with pytest.raises(BudgetExhausted, match=r"model.max_requests=1 reached"):
        Accounting(max_requests=1, requests=1).check_budget()
    with pytest.raises(BudgetExhausted, match=r"max_requests=0"):
        Accounting(max_requests=0).check_budget()
    Accounting(max_requests=None, requests=10**9).check_budget()
    priced = {"prompt": 1.0}
    Accounting(priced, max_cost=1.0, prompt_tokens=999_999).check_budget()
    with pytest.raises(BudgetExhausted, match=r"model.max_cost=1.0 reached \(spent 1.0000\)"):
        Accounting(priced, max_cost=1.0, prompt_tokens=1_000_000).check_budget()
    Accounting({}, max_cost=0.0, prompt_tokens=10**9).check_budget()  # no price table: cost unknown, not spent
    acc = Accounting()
    acc.add_retry("timeout")
    acc.add_retry("timeout")
    acc.add_retry("429 rate limited")
    assert acc.retries == 3 and acc.retry_reasons == {"timeout": 2, "429 rate limited": 1}


def test_accumulate_reads_edited_records_as_zero_and_adds_costs_it_knows():
    now = Accounting({"prompt": 1.0}, requests=2, answered=2, prompt_tokens=1_000_000,
                     retry_reasons={"timeout": 1}).as_dict()
    edited = {"requests": "many", "answered": True, "failed": 3, "prompt_tokens": 2.0, "retry_reasons": "x",
              "cost": "free"}
    total = accumulate(edited, now)
    assert total["requests"] == 2 and total["answered"] == 2 and total["failed"] == 3 and total["prompt_tokens"] == 1_000_002
    assert total["retry_reasons"] == {"timeout": 1} and total["cost"] == pytest.approx(1.0)
    both = accumulate({"cost": 0.25, "retry_reasons": {"timeout": True, "429 rate limited": 2}}, now)
    assert both["cost"] == pytest.approx(1.25) and both["retry_reasons"] == {"timeout": 1, "429 rate limited": 2}
    unpriced = Accounting().as_dict()
    assert accumulate({"cost": None}, unpriced)["cost"] is None
    assert accumulate({"cost": 0.5}, unpriced)["cost"] == 0.5
    assert accumulate("not a dict", now) == now and accumulate("not a dict", now) is not now
    assert math.isclose(accumulate({"cost": 2}, {**now, "cost": None})["cost"], 2)
