"""An ensemble attack step against the sum of its surrogates' single steps, in one run: time
(goal: within 1.05x of the sum) and peak memory (goal: at most the largest single surrogate's plus
the perturbation), with a one-graph ensemble (every surrogate's graph alive at once) beside it.

    python bench/ensemble_step.py [--steps 10] [--repeats 5] [--surrogates organism:0 organism:1 tiny_paligemma:0]

Time: the median over `repeats` of `steps` PGD steps, the ensemble and each single-surrogate attack
run alternately so drift in the machine's speed hits them alike. Memory: on the CPU, the most bytes
of tensors alive at once during one step, tracked op by op (bench/_memory.PeakTensorMemory: every
op's output storages until they are freed; the models' weights and the inputs are not counted); on
CUDA, torch.cuda.max_memory_allocated above what was allocated before the step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench._common import save  # noqa: E402
from bench._memory import PeakTensorMemory  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402
from visual_attacks.cases import ToolCallCase  # noqa: E402
from visual_attacks.craft import ensemble_objective  # noqa: E402
from visual_attacks.ensemble import EnsembleObjective, Surrogate, surrogate_view  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402

ATTACK = OmegaConf.create({"objective": {"name": "target_string"}, "prompts_per_step": 8, "seed": 0, "canvas_max_side": 448,
                           "eot": {"samples": 0}})


def peak_bytes(fn, models: list[torch.nn.Module], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with PeakTensorMemory(torch.nn.ModuleList(models)) as tracker:
        fn()
    return tracker.peak


def one_graph_step(objective: EnsembleObjective, canvas: torch.Tensor) -> None:
    """The naive ensemble: sum the surrogates' losses in one graph, one backward (all graphs alive)."""
    leaf = canvas.clone().requires_grad_(True)
    total = sum(s.weight * s.objective(surrogate_view(s.adapter, leaf), 0).to(leaf.device) for s in objective.surrogates)
    torch.autograd.grad(total.sum(), leaf)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--surrogates", nargs="+", default=["organism:0", "organism:1", "tiny_paligemma:0"])
    args = ap.parse_args()
    adapters = []
    for spec in args.surrogates:
        builder, _, seed = spec.partition(":")
        adapters.append((f"{builder} (seed {seed or 0})", load_builtin(builder, seed=int(seed or 0), device=args.device)))
    case = ToolCallCase(OmegaConf.create({"name": "send_email", "kind": "function_call",
                                          "text": '<function.send_email input="hi" to="hacker@gmail.com">'}),
                        images=args.images, heldout_prompts=1)
    bases = case.bases()
    surrogates = [Surrogate(name, 1.0, adapter) for name, adapter in adapters]
    cfg = PGDConfig(eps=16 / 255, step_size=1 / 255, steps=args.steps, keep_best=False)

    def attack(chosen: list[Surrogate]):
        canvas, objective = ensemble_objective(case, adapters[0][1], bases, ATTACK, chosen)
        canvas = canvas.to(args.device)
        return (lambda: pgd(objective, canvas, cfg)), objective, canvas

    runs = [attack([s]) for s in surrogates] + [attack(surrogates)]
    for run, _, _ in runs:
        run()  # warm-up
    times: list[list[float]] = [[] for _ in runs]
    import time

    for _ in range(args.repeats):
        for i, (run, _, _) in enumerate(runs):
            start = time.perf_counter()
            run()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[i].append((time.perf_counter() - start) / args.steps)
    median = [sorted(t)[len(t) // 2] for t in times]
    singles, ensemble = median[:-1], median[-1]

    models = [a.model for _, a in adapters]
    single_peaks = [peak_bytes(lambda o=o, c=c: o.loss_and_grad(c, 0), models, torch.device(args.device))
                    for _, o, c in runs[:-1]]
    _, ens_objective, ens_canvas = runs[-1]
    ens_peak = peak_bytes(lambda: ens_objective.loss_and_grad(ens_canvas, 0), models, torch.device(args.device))
    naive_peak = peak_bytes(lambda: one_graph_step(ens_objective, ens_canvas), models, torch.device(args.device))
    perturbation = 2 * ens_canvas.numel() * 4  # the canvas copy and the gradient accumulator, fp32

    mib = lambda b: b / 2 ** 20
    for (name, _), t, p in zip(adapters, singles, single_peaks):
        print(f"single {name:28s} {t * 1000:8.1f} ms/step  peak {mib(p):7.2f} MiB")
    print(f"ensemble of {len(adapters)} (one after another)  {ensemble * 1000:8.1f} ms/step  peak {mib(ens_peak):7.2f} MiB")
    print(f"ensemble in one graph (naive)       {'':8s}            peak {mib(naive_peak):7.2f} MiB")
    time_ratio = ensemble / sum(singles)
    memory_goal = max(single_peaks) + perturbation
    print(f"time: ensemble / sum of singles = {time_ratio:.3f}x (goal <= 1.05x)")
    print(f"memory: ensemble {mib(ens_peak):.2f} MiB vs largest single + perturbation {mib(memory_goal):.2f} MiB "
          f"({ens_peak / memory_goal:.3f}x; goal <= 1); one graph: {mib(naive_peak):.2f} MiB, sum of singles "
          f"{mib(sum(single_peaks)):.2f} MiB")
    path = save("ensemble_step", {
        "device": args.device, "surrogates": [n for n, _ in adapters], "images": args.images, "prompts_per_step": 8,
        "steps": args.steps, "repeats": args.repeats,
        "single_ms_per_step": [round(t * 1000, 2) for t in singles], "ensemble_ms_per_step": round(ensemble * 1000, 2),
        "time_ratio_vs_sum": round(time_ratio, 4),
        "single_peak_mib": [round(mib(p), 3) for p in single_peaks], "ensemble_peak_mib": round(mib(ens_peak), 3),
        "one_graph_peak_mib": round(mib(naive_peak), 3), "perturbation_mib": round(mib(perturbation), 4),
        "memory_ratio_vs_largest_plus_perturbation": round(ens_peak / memory_goal, 4),
        "memory_method": "cuda max_memory_allocated" if args.device == "cuda" else "PeakTensorMemory (op-by-op live tensor storages)",
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
