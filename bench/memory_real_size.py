"""Activation memory of one PGD step on a llava-1.5-7b-sized model in bf16, counted on the CPU
(no GPU needed): how many prompts per step fit on a card, with and without activation
checkpointing.

The real widths run (CLIP ViT-L/14 at 336 px, Llama-2-7B layers) at depths of 1 and 2 layers per
tower; the layers of a tower are identical, so the full depth's memory is the measured base plus
one per-layer increment per further layer. Counted: every tensor the step creates, until freed
(`bench/_memory.py`), weights excluded. Not counted: allocator overhead and kernel workspaces, and
GPU attention kernels may keep slightly different tensors than the CPU's, so read it as an estimate
of a GPU's peak, not a measurement of one.

    python bench/memory_real_size.py [--prompts 1 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import save  # noqa: E402
from bench.execution_options import peak_step_memory  # noqa: E402
from bench.gpu_real_size import SIZES, random_llava  # noqa: E402
from mmsafety.models.llava import LlavaAdapter  # noqa: E402
from mmsafety.placement import resolve_placement  # noqa: E402

GIB = 2**30
CARDS_GIB = {"24 GB (RTX 4090, A10)": 24, "48 GB (L40S, A6000)": 48, "80 GB (A100, H100)": 80, "141 GB (H200)": 141}


def step_peak(vision_layers: int, text_layers: int, prompts: int, checkpointing: bool,
              size: str = "llava-1.5-7b") -> int:
    model, processor = random_llava(size, "cpu", torch.bfloat16, vision_layers, text_layers)
    adapter = LlavaAdapter(model, processor, resolve_placement("cpu", "bfloat16", None, checkpointing),
                           f"{size}-sized", "random-init")
    return peak_step_memory(adapter, prompts)


def activation_estimate(prompts: int, checkpointing: bool, size: str = "llava-1.5-7b") -> dict:
    """Bytes of one step's activations at the full depth of `size`, from models of 1 and 2 layers
    per tower: {"total", "per_vision_layer", "per_text_layer", "one_layer_each"}."""
    depth = {tower: SIZES[size][tower]["num_hidden_layers"] for tower in ("vision", "text")}
    base, more_vision, more_text = (step_peak(v, t, prompts, checkpointing, size) for v, t in ((1, 1), (2, 1), (1, 2)))
    per_vision, per_text = more_vision - base, more_text - base
    return {"total": base + (depth["vision"] - 1) * per_vision + (depth["text"] - 1) * per_text,
            "per_vision_layer": per_vision, "per_text_layer": per_text, "one_layer_each": base}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    model, _ = random_llava("llava-1.5-7b", "meta", torch.bfloat16)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    print(f"llava-1.5-7b-sized, bf16: weights {weights_gib:.1f} GiB; activation peak of one PGD step "
          f"(loss + gradient to the pixels), counted at real widths on the CPU")
    rows = []
    for checkpointing in (False, True):
        for b in args.prompts:
            start = time.perf_counter()
            estimate = activation_estimate(b, checkpointing)
            total, per_vision, per_text = estimate["total"], estimate["per_vision_layer"], estimate["per_text_layer"]
            base = estimate["one_layer_each"]
            rows.append({"checkpointing": checkpointing, "prompts": b, "activations_gib": total / GIB,
                         "per_vision_layer_mib": per_vision / 2**20, "per_text_layer_mib": per_text / 2**20,
                         "one_layer_each_gib": base / GIB, "seconds": time.perf_counter() - start})
            print(f"  checkpointing={checkpointing!s:5} B={b}: activations {total / GIB:.2f} GiB "
                  f"({per_text / 2**20:.0f} MiB per language layer, {per_vision / 2**20:.0f} MiB per vision layer); "
                  f"step total with weights {weights_gib + total / GIB:.1f} GiB")
    # Activations grow linearly with B (same prompts, padded): the slope between the two B's.
    fits = {}
    for checkpointing in (False, True):
        (lo, hi) = [r for r in rows if r["checkpointing"] == checkpointing][:2]
        per_prompt = (hi["activations_gib"] - lo["activations_gib"]) / (hi["prompts"] - lo["prompts"])
        fixed = lo["activations_gib"] - per_prompt * lo["prompts"]
        fits[str(checkpointing)] = {"per_prompt_gib": per_prompt, "fixed_gib": fixed,
                                    "max_prompts": {card: int((gib * 0.9 - weights_gib - fixed) / per_prompt)
                                                    for card, gib in CARDS_GIB.items()}}
        print(f"  checkpointing={checkpointing!s:5}: {per_prompt:.2f} GiB per prompt; most prompts per step "
              f"in 90 % of a card: " + ", ".join(f"{card} {n}" for card, n in fits[str(checkpointing)]["max_prompts"].items()))
    path = save("memory_real_size", {"weights_gib": weights_gib, "rows": rows, "fits": fits})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
