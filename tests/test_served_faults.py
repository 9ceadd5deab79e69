"""Faults injected between the served-model adapter and a real `mmsafety-serve`: the run completes,
every meme is answered once or recorded as an error with its reason, and the counts add up; a run
killed with SIGKILL and started again re-pays nothing it had received."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from goat_bench.cli import run_eval
from mmsafety.records import read_samples
from tests.served_support import KEY_ENV, ROOT, TEST_KEY, FaultProxy, child_env, keyed_served_organism

# One fault per meme on its first request (in order of arrival), then the real server answers; the
# "500!" memes fail on every attempt and "empty" memes are answered with an empty string.
SCHEDULE = ["429", "500", "stall", "drop", "malformed", "nochoices", "empty", "500!", "ok", "ok"]


@pytest.fixture(scope="module")
def server():
    with keyed_served_organism() as base_url:
        yield base_url


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/")[0])


def overrides(base_url, cache, *extra):
    return ["model=openai_compatible", f"model.base_url={base_url}", f"model.api_key_env={KEY_ENV}",
            f"model.cache_path={cache}", "task=goat_hatefulness", "scoring=generate", *extra]


def answers(run_dir) -> dict:
    return {s["id"]: (s.get("status"), s.get("answer"), s.get("pred")) for s in read_samples(run_dir / "samples.jsonl")}


@pytest.mark.slow
def test_injected_faults_are_retried_or_recorded_and_the_counts_add_up(server, tmp_path):
    n, max_retries = 30, 2
    order: dict[str, int] = {}

    def plan(sha, attempt):
        fault = SCHEDULE[order.setdefault(sha, len(order)) % len(SCHEDULE)]
        if fault == "500!":
            return "500"
        if fault == "empty":
            return "empty"
        return fault if attempt == 0 else "ok"

    proxy = FaultProxy(port_of(server), plan, stall_s=12.0, retry_after_s=1.0)
    try:
        run_eval(tmp_path / "faulty", *overrides(proxy.base_url, tmp_path / "c1.sqlite", f"task.limit={n}",
                                                  "batch_size=32", "model.max_connections=8", "model.timeout_s=5",
                                                  f"model.max_retries={max_retries}"))
    finally:
        proxy.close()
    run_eval(tmp_path / "reference", *overrides(server, tmp_path / "c2.sqlite", f"task.limit={n}"))
    record = json.loads((tmp_path / "faulty" / "record.json").read_text())
    acc, samples = record["served"]["accounting"], read_samples(tmp_path / "faulty" / "samples.jsonl")
    by_sha = defaultdict(list)
    for entry in proxy.log:
        by_sha[entry["sha"]].append(entry)
    faults = Counter(SCHEDULE[order[sha] % len(SCHEDULE)] for sha in by_sha)
    never_answered = [sha for sha, tries in by_sha.items() if not any(t["answered"] for t in tries)]

    # by_sha has one more request than memes: the probe before the run (the first, so its fault is a 429).
    assert record["status"] == "partial" and len(samples) == n == len(by_sha) - 1  # 3 memes errored
    assert len({s["id"] for s in samples}) == n  # every meme once
    assert record["counts"] == {"ok": n - faults["500!"], "skipped": 0, "errors": faults["500!"]} and faults["500!"] == 3
    assert len(never_answered) == faults["500!"]
    errors = [s for s in samples if s["status"] == "error"]
    assert all(s["reason"] == f"500 server error after {max_retries + 1} attempts" and "pred" not in s for s in errors)
    # The client's accounting is the proxy's view: every request, every retry, every answer.
    assert acc["requests"] == len(proxy.log) and acc["retries"] == len(proxy.log) - (n + 1)
    assert acc["answered"] == sum(e["answered"] for e in proxy.log) == n + 1 - faults["500!"]
    assert acc["failed"] == faults["500!"]
    assert {"429 rate limited", "500 server error", "timeout", "connection error", "malformed response",
            "no choices"} <= set(acc["retry_reasons"])
    for sha, tries in by_sha.items():  # Retry-After: 1 was honoured
        if tries[0]["fault"] == "429":
            assert tries[1]["t"] - tries[0]["t"] >= 1.0
    # Answers equal a run without faults, except the memes the server answered with an empty string.
    faulty, reference = answers(tmp_path / "faulty"), answers(tmp_path / "reference")
    empty = [i for i, (status, answer, _) in faulty.items() if status == "ok" and answer == ""]
    assert len(empty) == faults["empty"] and all(faulty[i][2] is None for i in empty)  # parsed as invalid
    assert {i: v for i, v in faulty.items() if v[0] == "ok" and i not in empty} == {
        i: v for i, v in reference.items() if faulty[i][0] == "ok" and i not in empty}


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_repays_nothing_received(server, tmp_path):
    n, connections = 40, 4
    proxy = FaultProxy(port_of(server), delay_s=0.25)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "goat_bench.cli", *overrides(proxy.base_url, tmp_path / "cache.sqlite", f"task.limit={n}",
                                                              "batch_size=4", f"model.max_connections={connections}"),
           f"hydra.run.dir={out}"]
    env = child_env(**{KEY_ENV: TEST_KEY})
    try:
        first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while len(read_samples(out / "samples.jsonl")) < 12:
            assert first.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = list(proxy.log)
        done_before = len(read_samples(out / "samples.jsonl"))
        assert done_before < n
        second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
    finally:
        proxy.close()
    after = proxy.log[len(before):]
    received = {e["sha"] for e in before if e["answered"]}
    asked_again = {e["sha"] for e in after} & received
    # Only answers in flight at the kill (sent by the server, not yet stored) may be asked for again,
    # and the probe each invocation sends before its first meme (the same request both times).
    assert len(asked_again) <= connections + 1
    assert len(received) >= done_before and len(after) == n - len(received) + len(asked_again) + 1
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "completed" and record["counts"]["ok"] == n and record["timing"]["resumes"] == 1
    run_eval(tmp_path / "uninterrupted", *overrides(server, tmp_path / "fresh.sqlite", f"task.limit={n}"))
    assert answers(out) == answers(tmp_path / "uninterrupted")
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:  # the CLI's Hydra files and logs too
        assert TEST_KEY.encode() not in path.read_bytes(), path
    assert TEST_KEY not in second.stdout + second.stderr
