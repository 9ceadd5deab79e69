"""How cost grows: PGD step time versus image size, prompt length and prompts per step B, and
evaluation time versus the number of memes, each with a least-squares line (slope, intercept).

Image size needs models whose input size differs: random-init tiny LLaVAs (patch 16) at 32, 64
and 128 pixels, i.e. 4, 16 and 64 image tokens, built in memory. The other series use the organism.

    python bench/growth.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import save, timed  # noqa: E402
from goat_bench.prompts import PAPER  # noqa: E402
from mmsafety.models.llava import LlavaAdapter  # noqa: E402
from mmsafety.organisms.tiny_llava import new_tiny_llava, tiny_processor  # noqa: E402
from mmsafety.placement import resolve_placement  # noqa: E402
from mmsafety.synthetic import memes, scenes  # noqa: E402
from mmsafety.synthetic import prompts as prompt_sets  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402
from visual_attacks.objectives import PromptSampler, target_string  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402
from visual_attacks.targets import ToolTarget  # noqa: E402

STEPS = 20
TARGET = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)


def fit(xs: list[float], ys: list[float]) -> dict:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return {"x": xs, "y": ys, "slope": float(slope), "intercept": float(intercept)}


def step_ms(adapter, prompts: list[str], b: int) -> float:
    clean = adapter.to_input_pixels([s.image for s in scenes.scenes(0, 1)])
    objective = target_string(adapter, TARGET, PromptSampler(prompts, b, seed=0))
    return 1000 * timed(lambda: pgd(objective, clean, PGDConfig(steps=STEPS)), 3) / STEPS


def in_memory_tiny_llava(image_size: int) -> LlavaAdapter:
    processor = tiny_processor(image_size)
    return LlavaAdapter(new_tiny_llava(processor, seed=0), processor, resolve_placement("cpu", "float32"),
                        f"tiny-llava-{image_size}px", "in-memory")


def main() -> None:
    organism = load_builtin("organism")
    train = prompt_sets.benign_prompts("train")
    results = {}

    results["step_ms_vs_prompts_per_step"] = fit([1, 2, 4, 8, 16], [step_ms(organism, train, b) for b in (1, 2, 4, 8, 16)])

    lengths, times = [], []
    for words in (0, 20, 40, 80):
        prompts = [p + " Please answer" + " carefully" * words for p in train[:64]]
        lengths.append(float(np.mean([len(organism.prompt_ids(p)) for p in prompts])))
        times.append(step_ms(organism, prompts, 8))
    results["step_ms_vs_prompt_tokens"] = fit(lengths, times)

    sizes, times = [], []
    for side in (32, 64, 128):
        adapter = in_memory_tiny_llava(side)
        sizes.append(side * side)
        times.append(step_ms(adapter, train, 8))
    results["step_ms_vs_image_pixels"] = fit(sizes, times)

    counts, seconds = [25, 50, 100, 200], []
    pool = [m for t in memes.TASKS for m in memes.memes(t, "heldout", 40, seed=5)]
    tasks = [t for t in memes.TASKS for _ in range(40)]
    for n in counts:
        images, prompts = [m.image for m in pool[:n]], [PAPER.render(t, m.text) for t, m in zip(tasks[:n], pool[:n])]

        def score():
            for i in range(0, n, 16):
                organism.choice_logprobs(images[i:i + 16], prompts[i:i + 16], ["Yes", "No"])

        score()
        start = time.perf_counter()
        score()
        seconds.append(time.perf_counter() - start)
    results["eval_seconds_vs_memes"] = fit(counts, seconds)

    print("growth on the CPU (organism unless noted); least-squares line y = slope * x + intercept")
    units = {"step_ms_vs_prompts_per_step": ("ms/step", "prompts per step"),
             "step_ms_vs_prompt_tokens": ("ms/step", "prompt tokens (mean)"),
             "step_ms_vs_image_pixels": ("ms/step", "input pixels (tiny LLaVA, 32/64/128 px)"),
             "eval_seconds_vs_memes": ("s", "memes (logprob, batch 16)")}
    for name, r in results.items():
        y_unit, x_name = units[name]
        pairs = ", ".join(f"{x:g}: {y:.3g}" for x, y in zip(r["x"], r["y"]))
        print(f"  {y_unit} vs {x_name}: slope {r['slope']:.4g}, intercept {r['intercept']:.3g}   [{pairs}]")
    print(f"  threads: {torch.get_num_threads()}")
    path = save("growth", results)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
