"""Attack success against budget at equal forward+backward counts: the default (attack=tool_call),
APGD (attack=apgd) and the worst case over the two (attack=worst_case, each member given half the
steps, so an image costs at most the same forward+backward passes), side by side in one run on
the organism. One line per (attack, eps) in bench/results/attack_strength.jsonl, with the load
average before and after; `--plot` draws docs/img/attack_strength_<case>.png from the latest run's
lines. `--case verdict_flip`: the same three on the meme moderator (attack=verdict_flip).

    nice -n 5 python -m bench.attack_strength --steps 500 --images 4 --heldout 16
    python -m bench.attack_strength --plot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench._common import RESULTS, save

EPS = ("2/255", "4/255", "8/255", "16/255", "32/255")


def attacks(steps: int, case: str = "tool_call") -> dict[str, list[str]]:
    half = max(1, steps // 2)
    if case == "verdict_flip":  # attack=verdict_flip's objective and step, its optimizer or apgd
        return {
            "default": ["attack=verdict_flip", f"attack.steps={steps}"],
            "apgd": ["attack=verdict_flip", "attack.optimizer=apgd", f"attack.steps={steps}"],
            "worst_case": ["attack=verdict_flip", f"attack.steps={half}",
                           "attack.members=[{name:default,preset:verdict_flip},{name:apgd,preset:verdict_flip,optimizer:apgd}]"],
        }
    return {
        "default": ["attack=tool_call", f"attack.steps={steps}"],
        "apgd": ["attack=apgd", f"attack.steps={steps}"],
        "worst_case": ["attack=worst_case", f"attack.steps={half}",
                       "attack.members=[{name:default,preset:tool_call},{name:apgd,preset:apgd}]"],
    }


def run(name: str, overrides: list[str], eps: str, args, run_id: str) -> dict:
    out = Path(args.out) / run_id / f"{name}-{eps.replace('/', '_')}"
    load_before = os.getloadavg()
    start = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "mmsafety-attack"), *overrides, f"attack.eps={eps}", f"images={args.images}",
           f"heldout_prompts={args.heldout}", f"model={args.model}", f"hydra.run.dir={out}"]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        return {"attack": name, "eps": eps, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    record = json.loads((out / "record.json").read_text())
    m = record["metrics"]
    headline = record["spec"]["headline"]
    return {"run": run_id, "case": args.case, "attack": name, "eps": eps, "model": args.model, "images": m["images"],
            "heldout_prompts": args.heldout, "steps_budget": args.steps,
            "success_pct": round(100 * m["asr"][headline], 1), "success_measure": headline,
            "clean_baseline_pct": round(100 * m["clean_baseline"][headline], 1),
            "steps_run_mean": m.get("steps_run"), "budget_saved": m.get("budget_saved"), "won_by": m.get("won_by"),
            "attack_seconds": round(m["attack_seconds"], 1), "wall_seconds": round(wall, 1),
            "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()]}


def plot(path: Path, out: Path, case: str = "tool_call") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "success_pct" in r and r.get("case", "tool_call") == case]
    latest = rows[-1]["run"]
    rows = [r for r in rows if r["run"] == latest]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, style, size in (("default", "o-", 9), ("apgd", "s-", 6), ("worst_case", "^--", 5)):
        pts = sorted((int(r["eps"].split("/")[0]), r["success_pct"]) for r in rows if r["attack"] == name)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=size, label=name)
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set(xlabel="L-inf budget (x/255)", ylabel=f"held-out success, {rows[0]['success_measure']} (%)",
           ylim=(-3, 103))
    ax.set_title(f"{rows[0]['model']}, {case}: {rows[0]['steps_budget']} forward+backward passes per image ({latest[:10]})",
                 fontsize=9)
    ax.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--model", default="organism")
    parser.add_argument("--eps", nargs="*", default=list(EPS))
    parser.add_argument("--out", default="/tmp/attack_strength")
    parser.add_argument("--case", default="tool_call", choices=["tool_call", "verdict_flip"])
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    if args.plot:
        plot(RESULTS / "attack_strength.jsonl",
             Path(__file__).resolve().parents[1] / "docs" / "img" / f"attack_strength_{args.case}.png", args.case)
        return
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    for eps in args.eps:  # budgets outermost: a run cut short still compares the attacks at the budgets it reached
        for name, overrides in attacks(args.steps, args.case).items():
            result = run(name, overrides, eps, args, run_id)
            save("attack_strength", result)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
