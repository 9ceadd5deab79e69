"""Memes per second: logprob scoring vs batched generate vs the official script's pattern
(one meme at a time, generate, parse), same model, same memes, measured in one run.

    python bench/goat_scoring.py [--memes 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save  # noqa: E402
from goat_bench.parsing import parse_answer  # noqa: E402
from goat_bench.prompts import PAPER  # noqa: E402
from mmsafety.synthetic import memes  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memes", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    adapter = load_builtin("organism")
    ms = [m for t in memes.TASKS for m in memes.memes(t, "heldout", args.memes // len(memes.TASKS), seed=11)]
    tasks = [t for t in memes.TASKS for _ in range(args.memes // len(memes.TASKS))]
    images, prompts = [m.image for m in ms], [PAPER.render(t, m.text) for t, m in zip(tasks, ms)]
    n = len(ms)

    def logprob():
        out = []
        for i in range(0, n, args.batch):
            lp = adapter.choice_logprobs(images[i:i + args.batch], prompts[i:i + args.batch], ["Yes", "No"])
            out += (lp[:, 0] > lp[:, 1]).int().tolist()
        return out

    def batched_generate():
        out = []
        for i in range(0, n, args.batch):
            out += [parse_answer(a).label for a in adapter.generate(images[i:i + args.batch], prompts[i:i + args.batch], 16)]
        return out

    def naive_generate():
        return [parse_answer(adapter.generate([im], [p], 16)[0]).label for im, p in zip(images, prompts)]

    results = {}
    labels = {}
    for name, fn in (("logprob", logprob), ("generate_batched", batched_generate), ("generate_one_at_a_time", naive_generate)):
        fn()  # warm-up
        start = time.perf_counter()
        labels[name] = fn()
        results[name] = n / (time.perf_counter() - start)
    agree = sum(a == b for a, b in zip(labels["logprob"], labels["generate_one_at_a_time"])) / n
    base = results["generate_one_at_a_time"]
    print(f"{n} memes, batch {args.batch}, organism on CPU")
    for name, rate in results.items():
        print(f"  {name:24} {rate:8.1f} memes/s   {rate / base:6.1f}x the one-at-a-time loop")
    print(f"  labels: logprob agrees with one-at-a-time generate on {agree:.1%} of memes; "
          f"batched generate equals it on {sum(a == b for a, b in zip(labels['generate_batched'], labels['generate_one_at_a_time'])) / n:.1%}")
    path = save("goat_scoring", {"memes": n, "batch": args.batch, "memes_per_s": results,
                                 "speedup_vs_naive": {k: v / base for k, v in results.items()}, "label_agreement": agree})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
