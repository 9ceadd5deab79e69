"""Attack success against budget at equal forward+backward counts: the default, APGD, sign PGD with
random restarts and the worst case over the three (each member given a third of the steps, so an image
costs at most the same forward+backward passes), side by side in one run. One line per (attack, eps)
in bench/results/attack_strength.jsonl, with the load average before and after; `--plot` draws
docs/img/attack_strength_<case>.png from the latest run's lines.

Cases: `tool_call` (the organism, attack=tool_call; apgd and pgd_restarts are its presets),
`verdict_flip` (the meme moderator, attack=verdict_flip), `harmbench` (the HarmBench victim organism,
attack=harmbench_pgd: HarmBench's MultiModalPGD, its 12 synthetic held-out behaviours, completions of
48 tokens judged in the job by the judge organism, harmbench_cls, as the HarmBench workload judges).

    nice -n 5 python -m bench.attack_strength --steps 120 --images 4 --heldout 16
    nice -n 5 python -m bench.attack_strength --case harmbench --steps 60
    python -m bench.attack_strength --plot --case harmbench
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
ATTACKS = ("default", "apgd", "pgd_restarts", "worst_case")
RESTARTS = 4          # pgd_restarts on its own: the steps shared over 4 random starts
MEMBER_RESTARTS = 2   # ... inside the worst case, where it has a third of the steps
# Per case: the default preset, the job's extra overrides, and how apgd / pgd_restarts are made from it.
CASES = {
    "tool_call": ("tool_call", [], {"preset": "apgd"}, {"preset": "pgd_restarts"}),
    "verdict_flip": ("verdict_flip", [], {"optimizer": "apgd"}, {"optimizer": "sign", "random_start": "true"}),
    "harmbench": ("harmbench_pgd", ["case.max_new_tokens=48"], {"optimizer": "apgd"},
                  {"random_start": "true"}),
}


def attacks(steps: int, case: str = "tool_call") -> dict[str, list[str]]:
    """The overrides of each attack; the worst case's members run a third of the steps each."""
    default, extra, apgd, restarts = CASES[case]

    def single(options: dict, n: int) -> list[str]:
        preset = options.get("preset", default)
        return [f"attack={preset}", *(f"attack.{k}={v}" for k, v in options.items() if k != "preset"), f"attack.restarts={n}"]

    def member(name: str, options: dict, n: int) -> str:
        keys = {"preset": options.get("preset", default), **{k: v for k, v in options.items() if k != "preset"}, "restarts": n}
        return "{name:" + name + "," + ",".join(f"{k}:{v}" for k, v in keys.items()) + "}"

    members = [member("default", {}, 1), member("apgd", apgd, 1), member("pgd_restarts", restarts, MEMBER_RESTARTS)]
    return {
        "default": [*extra, f"attack={default}", f"attack.steps={steps}"],
        "apgd": [*extra, *single(apgd, 1), f"attack.steps={steps}"],
        "pgd_restarts": [*extra, *single(restarts, RESTARTS), f"attack.steps={steps}"],
        "worst_case": [*extra, f"attack={default}", f"attack.steps={max(MEMBER_RESTARTS, steps // 3)}",
                       "attack.members=[" + ",".join(members) + "]"],
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
            "overrides": overrides, "steps_run_mean": m.get("steps_run"), "budget_saved": m.get("budget_saved"), "won_by": m.get("won_by"),
            "attack_seconds": round(m["attack_seconds"], 1), "wall_seconds": round(wall, 1),
            "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()]}


def run_rows(path: Path, case: str, run_id: str | None = None) -> list[dict]:
    """The lines of one run of `case` (its latest, or `run_id`)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "success_pct" in r and r.get("case", "tool_call") == case]
    run_id = run_id or rows[-1]["run"]
    return [r for r in rows if r["run"] == run_id]


def table(rows: list[dict]) -> str:
    """Markdown: one row per attack, one column per budget, and the run's load average."""
    budgets = sorted({r["eps"] for r in rows}, key=lambda e: int(e.split("/")[0]))
    lines = [f"| {rows[0]['success_measure']} (%), {rows[0]['steps_budget']} passes | " + " | ".join(budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for name in ATTACKS:
        cells = {r["eps"]: r for r in rows if r["attack"] == name}
        if cells:
            lines.append(f"| {name} | " + " | ".join(f"{cells[e]['success_pct']:g}" if e in cells else "-" for e in budgets) + " |")
    loads = [v for r in rows for v in (r["load_before"][0], r["load_after"][0])]
    return "\n".join(lines) + f"\n\nrun {rows[0]['run']}, 1-minute load average {min(loads):.1f} to {max(loads):.1f}"


def plot(path: Path, out: Path, case: str = "tool_call", run_id: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run_rows(path, case, run_id)
    latest = rows[0]["run"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, style, size in (("default", "o-", 10), ("apgd", "s-", 7), ("pgd_restarts", "D:", 5), ("worst_case", "^--", 5)):
        pts = sorted((int(r["eps"].split("/")[0]), r["success_pct"]) for r in rows if r["attack"] == name)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=size, label=name)
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    judged = "judged success" if case == "harmbench" else "held-out success"  # HarmBench: its completion, the judge's label
    ax.set(xlabel="L-inf budget (x/255)", ylabel=f"{judged}, {rows[0]['success_measure']} (%)", ylim=(-3, 103))
    ax.set_title(f"{rows[0]['model']}, {case}: {rows[0]['steps_budget']} forward+backward passes per image ({latest[:10]})",
                 fontsize=8)
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
    parser.add_argument("--model", default=None, help="default: organism (harmbench_victim for --case harmbench)")
    parser.add_argument("--eps", nargs="*", default=list(EPS))
    parser.add_argument("--out", default="/tmp/attack_strength")
    parser.add_argument("--case", default="tool_call", choices=sorted(CASES))
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--plot", action="store_true", help="draw the plot and print the table of a run (--run, else the latest)")
    parser.add_argument("--run", default=None, help="with --plot: the run id (its start time) to draw")
    args = parser.parse_args()
    args.model = args.model or ("harmbench_victim" if args.case == "harmbench" else "organism")
    if args.plot:
        plot(RESULTS / "attack_strength.jsonl",
             Path(__file__).resolve().parents[1] / "docs" / "img" / f"attack_strength_{args.case}.png", args.case, args.run)
        print(table(run_rows(RESULTS / "attack_strength.jsonl", args.case, args.run)))
        return
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    for eps in args.eps:  # budgets outermost: a run cut short still compares the attacks at the budgets it reached
        for name, overrides in attacks(args.steps, args.case).items():
            if name not in args.attacks:
                continue
            result = run(name, overrides, eps, args, run_id)
            save("attack_strength", result)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
