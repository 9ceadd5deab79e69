"""A run tells the truth when its model fails (issue 26 items 1-5), against real OpenAI-protocol
servers on 127.0.0.1: a switchable FastAPI endpoint in front of `mmsafety-serve` that refuses every
chat request (as LiteLLM's proxy does with a wrong key: 400, while /models answers), refuses only
requests that carry an image, refuses some of them, or forwards everything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mmsafety.cli.lifecycle import status_from_samples
from mmsafety.leaderboard.collect import build_rows
from mmsafety.records import read_samples
from mmsafety.served.accounting import Accounting, accumulate
from tests.served_support import KEY_ENV, ROOT, TEST_KEY, child_env, free_port, keyed_served_organism

N = 8  # memes per run


class SwitchableEndpoint:
    """An OpenAI-compatible endpoint whose chat answers follow `mode`: "refuse" (400 to every chat
    request), "refuse_images" (400 to requests with an image, a canned answer to text only),
    "refuse_some" (400 to every second request with an image, the probe's first), "forward" (to `upstream`).
    GET /models always answers. Every chat request is counted in `chats`."""

    def __init__(self, upstream: str):
        self.upstream, self.mode, self.chats, self.image_chats = upstream, "refuse", 0, 0
        app = FastAPI()
        refusal = {"error": {"message": "No connected db.", "type": "invalid_request_error", "code": "400"}}

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "organism", "object": "model", "owned_by": "test"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            self.chats += 1
            body = await request.body()
            has_image = b"image_url" in body
            self.image_chats += has_image
            every_second = has_image and self.image_chats % 2 == 0
            if self.mode == "refuse" or (self.mode == "refuse_images" and has_image) or (
                    self.mode == "refuse_some" and every_second):
                return JSONResponse(refusal, status_code=400)
            if self.mode == "refuse_images":
                return {"id": "x", "object": "chat.completion", "created": 0, "model": "organism",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes"},
                                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
            async with httpx.AsyncClient(timeout=120) as client:
                upstream = await client.post(f"{self.upstream}/chat/completions", content=body,
                                             headers={"authorization": request.headers.get("authorization", ""),
                                                      "content-type": "application/json"})
            return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            assert time.time() < deadline, "the test endpoint did not start"
            time.sleep(0.05)

    def close(self):
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def endpoint():
    with keyed_served_organism() as upstream:
        proxy = SwitchableEndpoint(upstream)
        try:
            yield proxy
        finally:
            proxy.close()


def overrides(endpoint, cache: Path, *extra) -> list[str]:
    return ["model=openai_compatible", f"model.base_url={endpoint.base_url}", f"model.api_key_env={KEY_ENV}",
            f"model.cache_path={cache}", "task=goat_hatefulness", "scoring=generate",
            f"task.limit={N}", "model.max_retries=1", *extra]


def eval_cli(endpoint, folder: Path, *extra) -> subprocess.CompletedProcess:
    """`mmsafety-eval` into `folder`, with a response cache of its own next to it."""
    cmd = [sys.executable, "-m", "goat_bench.cli", *overrides(endpoint, folder.with_suffix(".sqlite"), *extra),
           f"hydra.run.dir={folder}"]
    return subprocess.run(cmd, env=child_env(**{KEY_ENV: TEST_KEY}), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def record_of(folder: Path) -> dict:
    return json.loads((folder / "record.json").read_text())


def test_a_refused_run_stops_then_the_same_command_answers_everything_and_counts_both(endpoint, tmp_path):
    good, errored = tmp_path / "good", tmp_path / "errored"
    # 1. Every chat request refused (the probe's too): one line, non-zero, no sample recorded.
    endpoint.mode, before = "refuse", endpoint.chats
    first = eval_cli(endpoint, good)
    refused_chats = endpoint.chats - before
    errors = [line for line in (first.stdout + first.stderr).splitlines() if line.startswith("error:")]
    assert first.returncode != 0 and len(errors) == 1, first.stderr[-2000:]
    assert "probe" in errors[0] and "400 refused" in errors[0] and TEST_KEY not in first.stderr
    record = record_of(good)
    assert record["status"] == "failed" and read_samples(good / "samples.jsonl") == []
    assert refused_chats == 2 == record["served"]["accounting"]["requests"]  # the image probe, then text only

    # 2. A server that lists its model and answers text, but refuses every meme (each has an image):
    # the run goes through, every sample errors, the run fails with exit 1 and the most common error.
    endpoint.mode = "refuse_images"
    second = eval_cli(endpoint, errored, "model.max_connections=2")
    errors = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("error:")]
    assert second.returncode == 1 and len(errors) == 1, second.stderr[-2000:]
    assert f"every sample errored ({N})" in errors[0] and f"({N} of {N}): 400 refused" in errors[0]
    record = record_of(errored)
    assert record["status"] == "failed" and record["counts"] == {"ok": 0, "skipped": 0, "errors": N}
    # No task has a scored meme, so the Overall names all five as missing (not the paper's Overall).
    assert record["metrics"]["overall"] == {"n": 0, "errors": N, "missing_tasks": [
        "hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"]}

    # 3. The same command as (1) against a working server: every meme answered, accounting for both.
    endpoint.mode, before = "forward", endpoint.chats
    third = eval_cli(endpoint, good)
    assert third.returncode == 0, third.stderr[-2000:]
    record = record_of(good)
    assert record["status"] == "completed" and record["counts"] == {"ok": N, "skipped": 0, "errors": 0}
    history = record["invocations"]
    assert [h["status"] for h in history] == ["failed", "completed"]
    assert [h["accounting"]["requests"] for h in history] == [refused_chats, endpoint.chats - before]
    total = record["served"]["accounting"]
    assert total["requests"] == refused_chats + endpoint.chats - before == N + 1 + refused_chats
    assert total["failed"] == sum(h["accounting"]["failed"] for h in history) == 2  # the two refused probes
    assert total["answered"] == N + 1 and total["prompt_tokens"] == history[1]["accounting"]["prompt_tokens"] > 0

    # 4. The leaderboard over both folders: two rows (their configs differ in max_connections, and
    # each says so), the good one with the good run's own numbers over all N memes.
    rows, problems = build_rows([good, errored])
    assert problems == [] and len(rows) == 2
    by_status = {row.status: row for row in rows}
    assert set(by_status) == {"completed", "failed"}
    good_row = by_status["completed"]
    assert good_row.metrics["overall"]["n"] == N and good_row.metrics == record["metrics"]
    assert "config differs: " in good_row.note and "model.max_connections=16" in good_row.note
    assert "model.max_connections=2" in by_status["failed"].note and "merged" not in good_row.note

    # 5. Resumed parts merged with errors first: the answers win, the row shows the good numbers.
    copy = tmp_path / "a-errored-copy-of-good"
    shutil.copytree(good, copy)
    errored_lines = [{**{k: s[k] for k in ("task", "id", "label", "notes")}, "status": "error", "reason": "500"}
                     for s in read_samples(good / "samples.jsonl")]
    (copy / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in errored_lines))
    (copy / "record.json").write_text(json.dumps({**record, "status": "partial", "metrics": {}}))
    rows, _ = build_rows([copy, good])
    merged = next(row for row in rows if len(row.records) == 2)
    assert merged.metrics["overall"] == record["metrics"]["overall"] and merged.samples == N

    # 6. Resume retries errors: the same command as (2), the server now working, re-sends every
    # errored meme (and says so), replaces their lines, and the counts are exact.
    before = endpoint.chats
    fourth = eval_cli(endpoint, errored, "model.max_connections=2")
    assert fourth.returncode == 0, fourth.stderr[-2000:]
    assert f"0 already done; {N} that errored before are sent again" in fourth.stdout + fourth.stderr
    record = record_of(errored)
    samples = read_samples(errored / "samples.jsonl")
    assert record["status"] == "completed" and record["counts"] == {"ok": N, "skipped": 0, "errors": 0}
    assert sorted(s["id"] for s in samples) == sorted({s["id"] for s in samples}) and len(samples) == N
    assert len(read_samples(errored / "samples.retried.jsonl")) == N
    assert record["invocations"][-1]["retried_errors"] == N
    # A refusal is never cached: each meme was sent once more, plus the probe.
    assert endpoint.chats - before == N + 1 == record["invocations"][-1]["accounting"]["requests"]


def test_some_errored_samples_leave_the_run_partial_with_metrics_over_the_answered(endpoint, tmp_path):
    endpoint.mode = "refuse_some"
    endpoint.image_chats = 0
    run = eval_cli(endpoint, tmp_path / "run")
    record = record_of(tmp_path / "run")
    metrics = record["metrics"]
    samples = read_samples(tmp_path / "run" / "samples.jsonl")
    answered = [s for s in samples if s["status"] == "ok"]
    errors = N - len(answered)
    assert 0 < errors < N, "the hash split should refuse some memes and answer others"
    assert record["status"] == "partial" and record["counts"]["errors"] == errors
    assert record["stopped"].startswith(f"{errors} of {N} samples errored; metrics are over the {len(answered)} answered")
    # The console: the table over the answered memes with the errors beside them, then the line, exit 3.
    assert run.returncode == 3 and f"error: {record['stopped']}" in run.stdout + run.stderr
    table_errors = [line.split() for line in run.stdout.splitlines() if line.startswith("errors")]
    assert table_errors == [["errors", str(errors)]]
    # Metrics over the answered memes only: accuracy is their share of correct predictions.
    assert metrics["overall"]["n"] == len(answered) and metrics["overall"]["errors"] == errors
    assert metrics["overall"]["accuracy"] == pytest.approx(100 * sum(s["correct"] for s in answered) / len(answered))
    rows, _ = build_rows([tmp_path / "run"])
    assert f"{errors} errored, metrics over {len(answered)} answered" in rows[0].note


def test_status_follows_the_samples():
    ok, skip = {"status": "ok"}, {"status": "skipped", "reason": "corrupt image"}
    err = lambda why: {"status": "error", "reason": why}  # noqa: E731
    assert status_from_samples([ok, skip]) == ("completed", None)
    assert status_from_samples([skip]) == ("completed", None)  # data reasons are not errors
    status, line = status_from_samples([err("a"), err("b"), err("b"), skip])
    assert status == "failed" and "most common error (2 of 3): b" in line and "\n" not in line
    status, line = status_from_samples([ok, err("a")])
    assert status == "partial" and line.startswith("1 of 2 samples errored; metrics are over the 1 answered")


def test_accounting_adds_up_over_invocations():
    first = Accounting({"prompt": 1.0, "completion": 2.0}, requests=5, retries=2, answered=3, failed=2,
                       prompt_tokens=100, completion_tokens=10, retry_reasons={"429 rate limited": 2})
    second = Accounting({"prompt": 1.0, "completion": 2.0}, requests=4, retries=1, answered=3, cache_hits=7,
                        prompt_tokens=50, completion_tokens=5, retry_reasons={"429 rate limited": 1, "timeout": 1})
    whole = Accounting({"prompt": 1.0, "completion": 2.0}, requests=9, retries=3, answered=6, cache_hits=7,
                       failed=2, prompt_tokens=150, completion_tokens=15,
                       retry_reasons={"429 rate limited": 3, "timeout": 1})
    total = accumulate(first.as_dict(), second.as_dict())
    assert total == {**whole.as_dict(), "cost": pytest.approx(whole.cost)}
    assert accumulate(None, second.as_dict()) == second.as_dict()
