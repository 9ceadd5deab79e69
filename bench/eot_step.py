"""EOT step time per sample of transforms, in one run: an attack step on the organism with
attack.eot.samples = 0, 1, 2, 4 (each sample is one more forward and backward of the model on a
transformed image), with and without the differentiable JPEG, and the transforms alone.

    python bench/eot_step.py [--steps 5] [--repeats 3] [--samples 0 1 2 4]

Per sample of transforms = (step time with k samples - step time without EOT) / k. The
configurations run alternately, repeat after repeat, so drift in the machine's speed hits them alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench._common import save  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402
from visual_attacks.cases import ToolCallCase  # noqa: E402
from visual_attacks.craft import ensemble_objective  # noqa: E402
from visual_attacks.eot import EOTConfig, EOTransforms  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402


def attack_config(samples: int, jpeg: bool):
    eot = OmegaConf.structured(EOTConfig(samples=samples, p=1.0))  # p=1: every transform every time (worst case)
    if not jpeg:
        eot.jpeg_quality = None
    return OmegaConf.create({"objective": {"name": "target_string"}, "prompts_per_step": 8, "seed": 0, "canvas_max_side": 448,
                             "eot": eot})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    adapter = load_builtin("organism", device=args.device)
    case = ToolCallCase(OmegaConf.create({"name": "send_email", "kind": "function_call",
                                          "text": '<function.send_email input="hi" to="hacker@gmail.com">'}),
                        images=args.images, heldout_prompts=1)
    bases = case.bases()
    cfg = PGDConfig(eps=16 / 255, step_size=1 / 255, steps=args.steps, keep_best=False)

    def attack(samples: int, jpeg: bool):
        canvas, objective = ensemble_objective(case, adapter, bases, attack_config(samples, jpeg), None)
        canvas = canvas.to(args.device)
        return lambda: pgd(objective, canvas, cfg)

    def transforms_only(samples: int, jpeg: bool):
        """The transforms' own forward and backward, no model."""
        eot = EOTransforms(attack_config(samples, jpeg).eot, 0)
        x = torch.rand(args.images, 3, 64, 64, device=args.device)

        def run():
            for step in range(args.steps):
                for t in eot.for_step(step):
                    leaf = x.clone().requires_grad_(True)
                    torch.autograd.grad(t(leaf).sum(), leaf)

        return run

    configs = {("none", 0): attack(0, False)}
    for k in args.samples:
        configs[("eot", k)] = attack(k, True)
        configs[("eot_nojpeg", k)] = attack(k, False)
    configs[("transforms_only", 1)] = transforms_only(1, True)
    configs[("transforms_only_nojpeg", 1)] = transforms_only(1, False)
    for run in configs.values():
        run()  # warm-up
    times: dict = {key: [] for key in configs}
    for _ in range(args.repeats):
        for key, run in configs.items():
            start = time.perf_counter()
            run()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - start) / args.steps)
    median = {key: sorted(t)[len(t) // 2] * 1000 for key, t in times.items()}
    base = median[("none", 0)]
    print(f"organism, {args.images} images x 8 prompts per step, {args.device}: no EOT {base:.1f} ms/step")
    rows = []
    for k in args.samples:
        with_jpeg, without = median[("eot", k)], median[("eot_nojpeg", k)]
        row = {"samples": k, "ms_per_step": round(with_jpeg, 1), "ms_per_step_no_jpeg": round(without, 1),
               "ms_per_sample": round((with_jpeg - base) / k, 1), "ms_per_sample_no_jpeg": round((without - base) / k, 1)}
        rows.append(row)
        print(f"eot.samples={k}: {with_jpeg:.1f} ms/step ({row['ms_per_sample']:.1f} ms per sample; "
              f"without JPEG {without:.1f} ms/step, {row['ms_per_sample_no_jpeg']:.1f} ms per sample; "
              f"{with_jpeg / base:.2f}x the step without EOT)")
    t_all, t_nojpeg = median[("transforms_only", 1)], median[("transforms_only_nojpeg", 1)]
    print(f"the transforms alone, forward+backward per sample: {t_all:.1f} ms with JPEG, {t_nojpeg:.1f} ms without")
    path = save("eot_step", {"device": args.device, "images": args.images, "steps": args.steps, "repeats": args.repeats,
                             "p": 1.0, "no_eot_ms_per_step": round(base, 1), "rows": rows,
                             "transforms_only_ms_per_sample": round(t_all, 1),
                             "transforms_only_no_jpeg_ms_per_sample": round(t_nojpeg, 1)})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
