"""For the served-model tests: `mmsafety-serve` as a separate process on a free loopback port, and a
fault-injecting HTTP proxy in front of it (429 with Retry-After, 500, stalls, dropped connections,
malformed bodies, no choices, empty answers, stripped logprobs), which logs every request it sees."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmsafety.paths import cache_root

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-mmsafety-test-0f3c9a7e5b1d4c2a"  # what the test server requires; must never be written anywhere


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    env.setdefault("MMSAFETY_CACHE", str(cache_root()))  # the cache this process builds into
    return env


@dataclass
class Served:
    """A running `mmsafety-serve`: its base URL, its process and the file its output goes to."""

    base_url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve_organism(*args: str, key: str | None = TEST_KEY):
    """`mmsafety-serve` (the organism) on a free port; yields a `Served`. Its output goes to a file
    (a pipe nobody reads would block the server once full of log lines)."""
    port = free_port()
    env = child_env(**({"MMSAFETY_TEST_SERVER_KEY": key} if key else {}))
    # One torch thread: the CI and dev machines are small and shared, where two threads spin-wait
    # (a 2-token answer: 9 ms with one thread, 440 ms with two on 2 oversubscribed cores).
    cmd = [sys.executable, "-m", "mmsafety.serving.cli", "--port", str(port), "--threads", "1", *args]
    if key:
        cmd += ["--api-key-env", "MMSAFETY_TEST_SERVER_KEY"]
    with tempfile.TemporaryDirectory(prefix="mmsafety-serve-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        served = Served(f"http://127.0.0.1:{port}/v1", proc, log_path)
        try:
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mmsafety-serve exited: {served.log()}")
                try:
                    request = urllib.request.Request(f"{served.base_url}/models",
                                                     headers={"Authorization": f"Bearer {key}"})
                    urllib.request.urlopen(request, timeout=2).read()
                    break
                except OSError as e:
                    if getattr(e, "code", None) == 401:
                        break
                    if time.time() > deadline:
                        raise
                    time.sleep(0.3)
            yield served
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def served_organism(*args: str, key: str | None = TEST_KEY):
    """`mmsafety-serve` (the organism) on a free port; yields its base URL (…/v1)."""
    with serve_organism(*args, key=key) as served:
        yield served.base_url


def _completion(content: str | None, choices: bool = True) -> bytes:
    body = {"id": "chatcmpl-fault", "object": "chat.completion", "created": 0, "model": "organism",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                         "logprobs": None}] if choices else [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return json.dumps(body).encode()


def _response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FaultProxy:
    """An HTTP/1.1 proxy to `upstream` (host, port) that, per chat request, asks
    `plan(body_sha256, attempt)` what to do: "ok" (forward), "429", "500", "stall", "drop",
    "malformed", "nochoices", "empty", "strip_logprobs" (forward without logprobs). Every chat
    request is logged as {sha, attempt, fault, t, answered}; `answered` means a usable completion
    was sent back. GET requests are forwarded untouched."""

    def __init__(self, upstream_port: int, plan: Callable[[str, int], str] = lambda sha, attempt: "ok",
                 stall_s: float = 10.0, retry_after_s: float = 1.0, delay_s: float = 0.0):
        self.upstream_port, self.plan = upstream_port, plan
        self.stall_s, self.retry_after_s, self.delay_s = stall_s, retry_after_s, delay_s
        self.log: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, ready):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()

    def close(self):
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        lines = [l for l in head.split(b"\r\n") if l and not l.lower().startswith(b"connection:")]
        writer.write(b"\r\n".join(lines + [b"connection: close"]) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def _handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        if not head.startswith(b"POST"):
            writer.write(await self._forward(head, body))
            await writer.drain()
            writer.close()
            return
        sha = hashlib.sha256(body).hexdigest()
        attempt = self.attempts.get(sha, 0)
        self.attempts[sha] = attempt + 1
        fault = self.plan(sha, attempt)
        entry = {"sha": sha, "attempt": attempt, "fault": fault, "t": time.time(), "answered": False}
        self.log.append(entry)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = b""
        if fault in ("ok", "strip_logprobs"):
            out = await self._forward(head, body)
            if fault == "strip_logprobs":
                head_out, _, payload = out.partition(b"\r\n\r\n")
                data = json.loads(payload)
                for c in data.get("choices", []):
                    c["logprobs"] = None
                out = _response("200 OK", json.dumps(data).encode())
            entry["answered"] = b" 200 " in out.split(b"\r\n", 1)[0]
        elif fault == "429":
            out = _response("429 Too Many Requests", b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                            f"retry-after: {self.retry_after_s:g}")
        elif fault == "500":
            out = _response("500 Internal Server Error", b'{"error": {"message": "boom", "type": "server_error"}}')
        elif fault == "stall":
            await asyncio.sleep(self.stall_s)
        elif fault == "malformed":
            out = _response("200 OK", b'{"id": "chatcmpl-x", "choices": [')
        elif fault == "nochoices":
            out = _response("200 OK", _completion("No", choices=False))
        elif fault == "empty":
            out = _response("200 OK", _completion(""))
            entry["answered"] = True
        # "drop" and "stall": close without a response
        try:
            if out:
                writer.write(out)
                await writer.drain()
            writer.close()
        except ConnectionError:
            pass


# The variable that holds the test key for the client while a keyed server runs.
KEY_ENV = "MMSAFETY_TEST_KEY"


@contextmanager
def keyed_served_organism(*args: str):
    """`served_organism(*args)` with its key in KEY_ENV for the client while the server runs."""
    os.environ[KEY_ENV] = TEST_KEY
    try:
        with served_organism(*args) as base_url:
            yield base_url
    finally:
        os.environ.pop(KEY_ENV, None)
