"""GOAT memes/s through the served-model adapter against `mmsafety-serve` (the organism) adding a
fixed delay per request (default 200 ms, a remote API's latency): max_connections 1, 4, 16, 64,
measured in one run; a fully cached rerun of 500 memes; the client's own time per request (image
encoding, cache key and lookup) against the server's.

    python bench/served_throughput.py [--delay-ms 200] [--scoring logprob]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save  # noqa: E402
from goat_bench.cli import run_eval  # noqa: E402
from tests.served_support import TEST_KEY, served_organism  # noqa: E402

KEY_ENV = "MMSAFETY_BENCH_KEY"
# memes per task (5 tasks) at each connection count: about 10 s of requests each at 200 ms
LIMITS = {1: 8, 4: 20, 16: 100, 64: 100}


def overrides(base_url, scoring, *extra):
    return ["model=openai_compatible", f"model.base_url={base_url}", f"model.api_key_env={KEY_ENV}",
            f"scoring={scoring}", "task=goat_all", *extra]


def client_overhead(memes: int = 500) -> dict:
    """Per request, in ms: the cache key (pixel fingerprint + canonical JSON), a cache hit, and the
    PNG/JPEG encoding + base64 paid only on a miss."""
    from goat_bench.data import load_task, open_image
    from goat_bench.evaluate import synthetic_root
    from goat_bench.prompts import PAPER
    from mmsafety.served.cache import ResponseCache, request_key
    from mmsafety.served.encoding import data_url, encode_image, pixel_fingerprint

    root = synthetic_root(100)
    samples = [s for t in ("hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness") for s in load_task(root, t)]
    samples = samples[:memes]
    images = [open_image(s) for s in samples]
    start = time.perf_counter()
    keys = [request_key({"model": "organism", "messages": [{"image": pixel_fingerprint(im)},
                                                          {"text": PAPER.render(s.task, s.text)}], "max_tokens": 2})
            for s, im in zip(samples, images)]
    key_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "c.sqlite")
        for k in keys:
            cache.put(k, {"content": "No", "usage": {}})
        start = time.perf_counter()
        for k in keys:
            cache.get(k)
        hit_s = time.perf_counter() - start
        cache.close()
    timings = {}
    for fmt in ("png", "jpeg"):
        start = time.perf_counter()
        for im in images:
            data_url(encode_image(im, fmt), fmt)
        timings[fmt] = time.perf_counter() - start
    size = images[0].size
    return {"memes": len(images), "image_size": list(size), "ms_per_request": {
        "cache_key": 1000 * key_s / len(images), "cache_hit": 1000 * hit_s / len(images),
        "encode_png": 1000 * timings["png"] / len(images), "encode_jpeg": 1000 * timings["jpeg"] / len(images)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=200.0)
    ap.add_argument("--scoring", default="logprob")
    ap.add_argument("--connections", default="1,4,16,64", help="max_connections values to measure")
    ap.add_argument("--image-workers", type=int, default=4, help="threads decoding memes ahead (the model is remote)")
    ap.add_argument("--batch-per-connection", type=int, default=8, help="evaluate's batch_size = this x connections")
    ap.add_argument("--skip-cache", action="store_true", help="only the connection sweep")
    args = ap.parse_args()
    os.environ[KEY_ENV] = TEST_KEY
    load = os.getloadavg()[0]
    rates, walls = {}, {}
    with served_organism("--delay-ms", str(args.delay_ms), "--max-batch", "64") as url, \
            tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for connections in [int(c) for c in args.connections.split(",")]:
            limit = LIMITS.get(connections, 100)
            start = time.perf_counter()
            metrics, _ = run_eval(tmp / f"c{connections}", *overrides(
                url, args.scoring, f"task.limit={limit}", f"model.max_connections={connections}",
                f"batch_size={max(16, args.batch_per_connection * connections)}", "model.cache=false",
                f"image_workers={args.image_workers}"))
            walls[connections] = time.perf_counter() - start
            rates[connections] = metrics["throughput"]["memes_per_s"]
            print(f"max_connections={connections}: {metrics['throughput']['memes']} memes, "
                  f"{rates[connections]:.1f} memes/s", flush=True)
        if args.skip_cache:
            print(json.dumps({"memes_per_s": rates, "speedup": {c: r / rates[min(rates)] for c, r in rates.items()}}))
            return
        # 500 memes into a fresh cache, then the same run again: every answer from the cache.
        cache = f"model.cache_path={tmp / 'cache.sqlite'}"
        run_eval(tmp / "fill", *overrides(url, args.scoring, "model.max_connections=64", "batch_size=256", cache))
        start = time.perf_counter()
        cached, record = run_eval(tmp / "cached", *overrides(url, args.scoring, "model.max_connections=64",
                                                             "batch_size=256", cache))
        cached_wall = time.perf_counter() - start
        accounting = json.loads(Path(record).read_text())["served"]["accounting"]
    overhead = client_overhead()
    server_ms = 1000 / rates[min(rates)]
    result = {
        "delay_ms": args.delay_ms, "scoring": args.scoring, "load_average_1min_at_start": load,
        "image_workers": args.image_workers, "batch_size": f"max(16, {args.batch_per_connection} x max_connections)",
        "memes_per_s": rates, "speedup_vs_one_connection": {c: r / rates[min(rates)] for c, r in rates.items()},
        "cached_rerun": {"memes": cached["throughput"]["memes"], "scoring_loop_s": cached["throughput"]["seconds"],
                         # in-process run_eval: Hydra composition (~0.7 s), record, metrics with bootstrap CIs
                         "whole_run_s": cached_wall, "requests_sent": accounting["requests"],
                         "cache_hits": accounting["cache_hits"]},
        "client_overhead": {**overhead, "server_ms_per_request_at_one_connection": server_ms,
                            "client_share_png_miss": (overhead["ms_per_request"]["cache_key"] + overhead["ms_per_request"]["encode_png"]) / server_ms},
    }
    print(json.dumps(result, indent=2))
    print(f"saved to {save('served_throughput', result)}")


if __name__ == "__main__":
    main()
