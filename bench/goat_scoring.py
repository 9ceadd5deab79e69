"""Memes per second: logprob scoring vs batched generate vs one meme at a time (our adapter,
and the official script's pattern: processor + generate + decode per meme), same model, same
memes, measured in one run, labels compared.

    python bench/goat_scoring.py [--memes 200] [--batch 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import save  # noqa: E402
from goat_bench.parsing import parse_answer  # noqa: E402
from goat_bench.prompts import PAPER  # noqa: E402
from mmsafety.synthetic import memes  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402


def scoring_methods(adapter, images: list, prompts: list[str], batch: int) -> tuple[dict, dict]:
    """(methods, answers): methods maps a name to a callable scoring every meme, one label per meme
    in the input order: logprob (Yes vs No), generate_batched, adapter_one_at_a_time and
    official_pattern (labels parsed from greedy 16-token answers); answers maps generate_batched
    and official_pattern to callables returning their raw answers."""
    n = len(images)
    # As goat_bench.evaluate does: batches of similar prompt length (less padding); labels come
    # back in the original order for the comparison.
    order = sorted(range(n), key=lambda i: len(prompts[i]))

    def batched(score_batch):
        adapter._prompts_cache.entries.clear()  # a real run tokenises each meme's prompt once
        out = [None] * n
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            for j, label in zip(idx, score_batch([images[k] for k in idx], [prompts[k] for k in idx])):
                out[j] = label
        return out

    def logprob():
        return batched(lambda ims, ps: (lambda lp: (lp[:, 0] > lp[:, 1]).int().tolist())(
            adapter.choice_logprobs(ims, ps, ["Yes", "No"])))

    def generate_batched_answers():
        return batched(lambda ims, ps: adapter.generate(ims, ps, 16))

    def adapter_one_at_a_time():
        """Our adapter, one meme per call (greedy, 16 new tokens)."""
        adapter._prompts_cache.entries.clear()
        return [parse_answer(adapter.generate([im], [p], 16)[0]).label for im, p in zip(images, prompts)]

    def official_pattern_answers():
        """The official script's loop: per meme, render the chat, run the processor on text and
        image, generate greedily (16 new tokens), decode."""
        processor, out = adapter.processor, []
        for im, p in zip(images, prompts):
            chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
            inputs = processor(images=im, text=processor.apply_chat_template(chat, add_generation_prompt=True),
                               return_tensors="pt").to(adapter.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(adapter.dtype)
            with torch.no_grad():
                ids = adapter.model.generate(**inputs, max_new_tokens=16, do_sample=False, pad_token_id=adapter.pad_id)
            out.append(processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    answers = {"generate_batched": generate_batched_answers, "official_pattern": official_pattern_answers}

    def labels_of(name):
        return lambda: [parse_answer(a).label for a in answers[name]()]

    methods = {"logprob": logprob, "generate_batched": labels_of("generate_batched"),
               "adapter_one_at_a_time": adapter_one_at_a_time, "official_pattern": labels_of("official_pattern")}
    return methods, answers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    adapter = load_builtin("organism")
    ms = [m for t in memes.TASKS for m in memes.memes(t, "heldout", args.memes // len(memes.TASKS), seed=11)]
    tasks = [t for t in memes.TASKS for _ in range(args.memes // len(memes.TASKS))]
    images, prompts = [m.image for m in ms], [PAPER.render(t, m.text) for t, m in zip(tasks, ms)]
    n = len(ms)
    methods, _ = scoring_methods(adapter, images, prompts, args.batch)
    labels = {name: fn() for name, fn in methods.items()}  # warm-up, and the labels to compare
    # Rounds alternate the methods, so drift in the machine's speed hits all of them alike.
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    results = {name: n / sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    base = results["official_pattern"]
    print(f"{n} memes, batch {args.batch}, organism on CPU, median of {args.rounds} alternating rounds")
    for name, rate in results.items():
        print(f"  {name:24} {rate:8.1f} memes/s   {rate / base:6.1f}x the official pattern   "
              f"{rate / results['adapter_one_at_a_time']:5.1f}x our one-at-a-time generate")
    agree = {name: sum(a == b for a, b in zip(labels[name], labels["official_pattern"])) / n for name in methods}
    print("  labels equal to the official pattern's: " + ", ".join(f"{k} {v:.1%}" for k, v in agree.items()))
    path = save("goat_scoring", {"memes": n, "batch": args.batch, "rounds": args.rounds, "memes_per_s": results,
                                 "speedup_vs_official_pattern": {k: v / base for k, v in results.items()},
                                 "label_agreement_with_official_pattern": agree})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
