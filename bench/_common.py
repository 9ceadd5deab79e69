"""Shared by the benchmarks: machine info and appending results to bench/results/."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **result}) + "\n")
    return path


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def timed_pair(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run alternately (a, b, a, b, ...) after a warm-up of each."""
    return timed_alternating(a, b, repeats=repeats)


def timed_alternating(*fns, repeats: int) -> tuple[float, ...]:
    """Median seconds of each of `fns`, run in turn (a, b, c, a, b, c, ...) after a warm-up of each,
    so drift in the machine's speed hits all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return tuple(sorted(ts)[len(ts) // 2] for ts in times)
