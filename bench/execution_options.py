"""What placement.gradient_checkpointing and placement.compile cost and save on a PGD step, side
by side with plain eager execution in one run: step time, peak tensor memory at B = 1 and 8,
compile time, and the number of steps after which compiling has paid for itself.

    python bench/execution_options.py [--steps 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import save, timed_pair  # noqa: E402
from bench._memory import PeakTensorMemory  # noqa: E402
from mmsafety.synthetic import prompts as prompt_sets  # noqa: E402
from mmsafety.synthetic import scenes  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402
from visual_attacks.objectives import PromptSampler, target_string  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402
from visual_attacks.targets import ToolTarget  # noqa: E402

TARGET = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)


def attack(adapter, prompts: int, steps: int):
    clean = adapter.to_input_pixels([s.image for s in scenes.scenes(0, 1)])
    objective = target_string(adapter, TARGET, PromptSampler(prompt_sets.benign_prompts("train"), prompts, seed=0))
    return lambda: pgd(objective, clean, PGDConfig(steps=steps, keep_best=True))


def peak_step_memory(adapter, prompts: int) -> int:
    """Peak bytes of the tensors one loss + gradient creates (weights not counted)."""
    pixels = adapter.to_input_pixels([s.image for s in scenes.scenes(0, 1)]).repeat(prompts, 1, 1, 1)
    batch = prompt_sets.benign_prompts("train")[:prompts]
    with PeakTensorMemory(adapter.model) as memory:
        x = pixels.clone().requires_grad_(True)
        loss = adapter.target_loss(x, batch, [TARGET.render(p) for p in batch]).sum()
        torch.autograd.grad(loss, x)
    return memory.peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=8)
    args = ap.parse_args()
    steps, b = args.steps, args.prompts
    eager = load_builtin("organism")
    checkpointed = load_builtin("organism", gradient_checkpointing=True)
    compiled = load_builtin("organism", compile=True)

    mib = {name: {n: peak_step_memory(adapter, n) / 2**20 for n in (1, b)}
           for name, adapter in (("eager", eager), ("checkpointing", checkpointed))}
    t_eager, t_ckpt = (t / steps for t in timed_pair(attack(eager, b, steps), attack(checkpointed, b, steps), 5))

    start = time.perf_counter()
    attack(compiled, b, 3)()  # compiles the forward and backward graphs (dynamic shapes)
    compile_s = time.perf_counter() - start
    t_eager2, t_compiled = (t / steps for t in timed_pair(attack(eager, b, steps), attack(compiled, b, steps), 5))
    saved = t_eager2 - t_compiled
    break_even = compile_s / saved if saved > 0 else float("inf")

    print(f"organism on CPU, {b} prompts per PGD step, median of 5 alternating runs of {steps} steps")
    print(f"  checkpointing: {t_ckpt * 1000:.1f} ms/step vs eager {t_eager * 1000:.1f} ms ({t_ckpt / t_eager:.2f}x); "
          f"peak tensor memory B=1 {mib['checkpointing'][1]:.2f} vs {mib['eager'][1]:.2f} MiB, "
          f"B={b} {mib['checkpointing'][b]:.2f} vs {mib['eager'][b]:.2f} MiB "
          f"({mib['checkpointing'][b] / mib['eager'][b]:.2f}x)")
    print(f"  compile: {compile_s:.1f} s to compile, then {t_compiled * 1000:.1f} ms/step vs eager "
          f"{t_eager2 * 1000:.1f} ms ({t_compiled / t_eager2:.2f}x); pays for itself after "
          f"{break_even:.0f} steps")
    path = save("execution_options", {
        "prompts": b, "steps": steps,
        "checkpointing": {"ms_per_step": t_ckpt * 1000, "eager_ms_per_step": t_eager * 1000,
                          "ratio": t_ckpt / t_eager, "peak_tensor_mib": mib["checkpointing"],
                          "eager_peak_tensor_mib": mib["eager"]},
        "compile": {"compile_s": compile_s, "ms_per_step": t_compiled * 1000, "eager_ms_per_step": t_eager2 * 1000,
                    "ratio": t_compiled / t_eager2, "break_even_steps": break_even},
    })
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
