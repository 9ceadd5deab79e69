"""`mmsafety-serve` (the organism) under load from many concurrent async clients (httpx): valid short
and long requests, hostile ones (a 5 MB prompt, a PNG decompression bomb, 100,000 nested arrays, a
100 MB body, too many messages, malformed JSON) and clients that hang up mid-request, while /health
is polled and the server's resident memory sampled. Reports p50/p99 latency, throughput, 4xx by
reason, 5xx, requests left hanging, /health latency and RSS over time (a plot); then a short
request's latency alone and while a maximal-length request runs, with the two lanes and with one.

    nice -n 5 python bench/serve_load.py [--clients 32] [--seconds 180]

Results: bench/results/serve_load.jsonl and bench/results/serve_load_rss.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "sk-mmsafety-test-0f3c9a7e5b1d4c2a"  # tests.served_support.TEST_KEY
EOS = 2  # the organism's end-of-sequence token: biased away, a long request runs to its max_tokens
LONG_TOKENS = 400  # a maximal request: the organism's context is 512 tokens


def chat(messages, **fields) -> bytes:
    return json.dumps({"model": "organism", "messages": messages, **fields}).encode()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def short_body(i: int = 0) -> bytes:
    return chat(user(f"Question {i}: what colour is the shape?"), max_tokens=8, temperature=0)


def long_body() -> bytes:
    return chat(user("Tell me a long story."), max_tokens=LONG_TOKENS, temperature=0, logit_bias={str(EOS): -100})


@lru_cache(1)
def long_prompt_body(mb: float = 5.0) -> bytes:
    """About 2.5 million tokens of text in one user message."""
    return chat(user("hello world " * int(mb * 2 ** 20 / 12)), max_tokens=8)


@lru_cache(1)
def bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all black: about 110 KB that decode to side² pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@lru_cache(1)
def bomb_body(side: int = 30000) -> bytes:
    url = "data:image/png;base64," + base64.b64encode(bomb_png(side)).decode()
    return chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                              {"type": "text", "text": "What is this?"}]}], max_tokens=4)


def nested_body(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def many_messages_body(n: int = 1000) -> bytes:
    return chat([{"role": "user", "content": "hi"}] * n, max_tokens=4)


def malformed_body() -> bytes:
    return b'{"model": "organism", "messages": [{"role": "user", "content": "hi"'


HUGE_BODY = 100 * 2 ** 20


HOSTILE = {"long_prompt": long_prompt_body, "bomb": bomb_body, "nested": nested_body, "many_messages": many_messages_body,
           "malformed": malformed_body}


def raw_post(port: int, key: str, body_head: bytes, content_length: int | None, then_send: int) -> tuple[bytes, int]:
    """Sends the headers (Content-Length or chunked) and then up to `then_send` body bytes while a
    thread reads the reply; returns (the reply, body bytes sent when it came)."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
            "content-type: application/json\r\n")
    head += f"content-length: {content_length}\r\n" if content_length is not None else "transfer-encoding: chunked\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 ** 16)
    reply, got = bytearray(), threading.Event()

    def read():
        try:
            while chunk := sock.recv(65536):
                reply.extend(chunk)
                got.set()
        except OSError:
            pass
        got.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sock.sendall((head + "\r\n").encode())
    sent, block = 0, b" " * 2 ** 16
    try:
        while sent < then_send and not got.is_set():
            data = body_head if sent == 0 else block
            sock.sendall(data if content_length is not None else f"{len(data):x}\r\n".encode() + data + b"\r\n")
            sent += len(data)
    except OSError:  # the server closed the connection after refusing
        pass
    got.wait(30)
    time.sleep(0.2)
    sock.close()
    reader.join(5)
    return bytes(reply), sent


async def send(client: httpx.AsyncClient, base_url: str, kind: str, timeout: float, log: list[dict]) -> dict:
    """One request of `kind`; appends {kind, status, code, seconds, error, retry_after} to `log`. A
    `disconnect` request's status is "hung up" when its client gave up first, else the reply's own
    status: a 429 or a 5xx that came back before the hang-up is tallied as such, never as an answer."""
    url = f"{base_url}/chat/completions"
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    entry = {"kind": kind, "status": None, "code": None, "error": None, "retry_after": None, "t": time.time()}
    start = time.perf_counter()
    try:
        status, text = None, b""
        if kind == "disconnect":  # a long request whose client gives up after a moment
            try:
                r = await asyncio.wait_for(client.post(url, content=long_body(), headers=headers, timeout=timeout),
                                           random.uniform(0.1, 1.5))
                status, text, entry["retry_after"] = r.status_code, r.content, r.headers.get("retry-after")
            except asyncio.TimeoutError:
                entry["status"] = "hung up"
        elif kind == "huge_body":  # on a raw socket: httpx would not read the 413 while still sending
            port = int(base_url.rsplit(":", 1)[1].split("/")[0])
            reply, sent = await asyncio.to_thread(raw_post, port, KEY, b'{"model": "organism"', HUGE_BODY, HUGE_BODY)
            head, _, text = reply.partition(b"\r\n\r\n")
            status, entry["body_bytes_sent"] = int(head.split()[1]) if head else None, sent
            if status is None:
                entry["error"] = "connection closed without a reply"
        else:
            content = {"short": short_body, "long": long_body, **HOSTILE}[kind]()
            r = await client.post(url, content=content, headers=headers, timeout=timeout)
            status, text, entry["retry_after"] = r.status_code, r.content, r.headers.get("retry-after")
        if status is not None:
            entry["status"] = status
            try:
                entry["code"] = json.loads(text)["error"]["code"] if status >= 400 else None
            except (ValueError, KeyError, TypeError):
                entry["code"] = "(not OpenAI's error shape)"
    except httpx.TimeoutException:
        entry["error"] = "client timeout (hanging)"
    except httpx.HTTPError as e:
        entry["error"] = f"{type(e).__name__}"
    entry["seconds"] = time.perf_counter() - start
    log.append(entry)
    return entry


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


MIX = {"short": 50, "long": 4, "disconnect": 10, "long_prompt": 6, "bomb": 6, "nested": 6, "many_messages": 6,
       "malformed": 6, "huge_body": 2}


async def load(base_url: str, pid: int, clients: int, seconds: float, timeout: float = 120.0, seed: int = 0) -> dict:
    """`clients` concurrent loops for `seconds`, each sending a request drawn from MIX, then waiting for
    the server to go idle. Returns the raw logs (requests, health polls, RSS samples)."""
    rng = random.Random(seed)
    random.seed(seed)
    kinds, weights = list(MIX), list(MIX.values())
    log: list[dict] = []
    health: list[dict] = []
    rss: list[tuple[float, float]] = []
    t0 = time.time()
    end = t0 + seconds
    stop = asyncio.Event()
    bomb_body(), long_prompt_body()  # built before the clock matters

    async def client_loop(i: int):
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=2)) as client:
            while time.time() < end:
                entry = await send(client, base_url, rng.choices(kinds, weights)[0], timeout, log)
                if entry.get("status") == 429:
                    await asyncio.sleep(min(2.0, float(entry.get("retry_after") or 1)))

    async def poll_health():
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    r = await client.get(base_url.removesuffix("/v1") + "/health", timeout=10)
                    health.append({"t": time.time() - t0, "status": r.status_code, "seconds": time.perf_counter() - start,
                                   "body": r.json()})
                except httpx.HTTPError as e:
                    health.append({"t": time.time() - t0, "status": None, "error": type(e).__name__,
                                   "seconds": time.perf_counter() - start})
                await asyncio.sleep(0.5)

    async def sample_rss():
        while not stop.is_set():
            rss.append((time.time() - t0, rss_mb(pid)))
            await asyncio.sleep(0.5)

    watchers = [asyncio.ensure_future(poll_health()), asyncio.ensure_future(sample_rss())]
    await asyncio.gather(*[client_loop(i) for i in range(clients)])
    load_s = time.time() - t0
    idle_at = None  # the server holds nothing: no request, no job waiting or running
    for _ in range(120):
        last = health[-1]["body"] if health and health[-1].get("status") == 200 else None
        if last and last["requests"]["in_server"] == 0 and last["jobs"]["waiting"] == 0 and last["jobs"]["running"] == 0:
            idle_at = time.time() - t0
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*watchers)
    return {"log": log, "health": health, "rss": rss, "load_s": load_s, "idle_at_s": idle_at}


def summarize(raw: dict, idle_rss_mb: float) -> dict:
    log, health, rss = raw["log"], raw["health"], raw["rss"]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for e in log:
        by_kind[e["kind"]][str(e["status"] if e["error"] is None else e["error"])] += 1
    ok_short = [e["seconds"] for e in log if e["kind"] == "short" and e["status"] == 200]
    ok_long = [e["seconds"] for e in log if e["kind"] == "long" and e["status"] == 200]
    answered = [e for e in log if e["status"] == 200]
    codes = Counter(e["code"] for e in log if isinstance(e["status"], int) and 400 <= e["status"] < 500)
    polls = [h for h in health if h["t"] <= raw["load_s"]]
    return {
        "requests": len(log), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "answered_per_s": round(len(answered) / raw["load_s"], 2),
        "short_latency_s": {"n": len(ok_short), "p50": percentile(ok_short, 50), "p99": percentile(ok_short, 99)},
        "long_latency_s": {"n": len(ok_long), "p50": percentile(ok_long, 50), "p99": percentile(ok_long, 99)},
        "4xx_by_reason": dict(codes.most_common()),
        "5xx": sum(1 for e in log if isinstance(e["status"], int) and e["status"] >= 500),
        "client_timeouts_hanging": sum(1 for e in log if e["error"] == "client timeout (hanging)"),
        "transport_errors": dict(Counter(e["error"] for e in log if e["error"] and "hanging" not in e["error"])),
        "server_idle_after_load_s": None if raw["idle_at_s"] is None else round(raw["idle_at_s"] - raw["load_s"], 1),
        "health": {"polls": len(polls), "answered_200": sum(1 for h in polls if h["status"] == 200),
                   "max_s": max((h["seconds"] for h in polls), default=None),
                   "p99_s": percentile([h["seconds"] for h in polls], 99)},
        "jobs_at_end": health[-1]["body"]["jobs"] if health and health[-1].get("status") == 200 else None,
        "rss_mb": {"idle": round(idle_rss_mb, 1), "max": round(max(m for _, m in rss), 1),
                   "end": round(rss[-1][1], 1)} if rss else None,
    }


async def short_latencies(base_url: str, n: int, while_long: bool, texts: dict | None = None) -> dict:
    """Latencies of `n` short requests sent one after another, alone or while one maximal-length
    request runs (started first; its own time is reported). `texts`, when given, receives the
    answers: {"short": [...], "long": ...}."""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    url = f"{base_url}/chat/completions"
    async with httpx.AsyncClient(timeout=120) as client:
        long_task, long_start = None, time.perf_counter()
        if while_long:
            long_task = asyncio.ensure_future(client.post(url, content=long_body(), headers=headers))
            await asyncio.sleep(0.3)  # the long one is running
        times = []
        for i in range(n):
            start = time.perf_counter()
            r = await client.post(url, content=short_body(i), headers=headers)
            assert r.status_code == 200, r.text
            times.append(time.perf_counter() - start)
            if texts is not None:
                texts.setdefault("short", []).append(r.json()["choices"][0]["message"]["content"])
            if long_task is not None and long_task.done():
                break
        out = {"n": len(times), "p50_s": percentile(times, 50), "max_s": max(times)}
        if long_task is not None:
            r = await long_task
            assert r.status_code == 200, r.text
            out["long_s"] = time.perf_counter() - long_start
            out["long_completion_tokens"] = r.json()["usage"]["completion_tokens"]
            if texts is not None:
                texts["long"] = r.json()["choices"][0]["message"]["content"]
    return out


def plot_rss(rss: list[tuple[float, float]], idle: float, load_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([t for t, _ in rss], [m for _, m in rss], lw=1.2, label="server RSS")
    ax.axhline(idle, color="grey", ls="--", lw=1, label=f"idle {idle:.0f} MB")
    ax.axvline(load_s, color="red", ls=":", lw=1, label="load ends")
    ax.set_xlabel("seconds")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title("mmsafety-serve (organism) under mixed valid/hostile/disconnecting load")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    from bench._common import RESULTS, save
    from tests.served_support import serve_organism

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=180)
    p.add_argument("--max-queue", type=int, default=24, help="the server's --max-queue (low: 429s happen)")
    p.add_argument("--skip-fairness", action="store_true")
    args = p.parse_args(argv)
    load_avg = os.getloadavg()[0]
    server_args = ["--max-queue", str(args.max_queue), "--queue-timeout-s", "30"]
    result: dict = {"clients": args.clients, "seconds": args.seconds, "mix_weights": MIX, "server_args": server_args,
                    "load_average_1min_at_start": load_avg, "model": "organism", "torch_threads": 1}
    with serve_organism(*server_args) as served:
        time.sleep(2)
        idle = rss_mb(served.proc.pid)
        raw = asyncio.run(load(served.base_url, served.proc.pid, args.clients, args.seconds))
        result["load"] = summarize(raw, idle)
        result["rss_timeline_mb"] = [[round(t, 1), round(m, 1)] for t, m in raw["rss"][::2]]
        plot_rss(raw["rss"], idle, raw["load_s"], RESULTS / "serve_load_rss.png")
        lines = served.log().splitlines()
        result["server_log"] = {"lines": len(lines), "tracebacks": sum("Traceback" in l for l in lines)}
        if not args.skip_fairness:
            result["fairness_two_lanes"] = {"alone": asyncio.run(short_latencies(served.base_url, 10, False)),
                                            "while_long": asyncio.run(short_latencies(served.base_url, 20, True))}
    if not args.skip_fairness:
        with serve_organism("--long-tokens", "100000") as served:  # one lane: what the lanes prevent
            result["fairness_one_lane"] = {"alone": asyncio.run(short_latencies(served.base_url, 10, False)),
                                           "while_long": asyncio.run(short_latencies(served.base_url, 20, True))}
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in result.items() if k != "rss_timeline_mb"}, indent=1))
    print("saved to", save("serve_load", result))


if __name__ == "__main__":
    main()
