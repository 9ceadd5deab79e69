"""Transfer evidence on the organisms (issue 17, README "Transfer"): craft on organism seed 0 alone and on
seeds 0+1 as an ensemble, each with and without EOT, at each budget; judge every crafted run on the
held-out organism seed 2 under each deploy transform. Prints the matrix (success % on seed 2, with seed
2's clean baseline under the same transform) and appends it to bench/results/transfer_matrix.jsonl.

    nice -n 15 python bench/transfer_matrix.py --stage craft         # the README's settings, then:
    nice -n 15 python bench/transfer_matrix.py --stage judge --victim-seed 2
    nice -n 15 python bench/transfer_matrix.py --steps 300 --images 4 --heldout-prompts 16 --out runs/tm300

Each craft and each judgement is an ordinary job folder under --out (default runs/transfer_matrix), so a
killed run resumes where it stopped, and
`mmsafety-leaderboard runs/transfer_matrix --out runs/transfer_matrix/board` draws the same matrix. Crafts run in the order of --eps (largest first by default), so a short session measures the
budget most likely to transfer first. The equivalent command lines are printed before each job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save  # noqa: E402
from visual_attacks.cli import run_attack_job, run_judge_job  # noqa: E402

SURROGATES = {
    "seed 0": [],
    "seeds 0+1": ["attack.surrogates=[{model:organism,seed:0},{model:organism,seed:1}]"],
}


def craft_overrides(args, eps: str, surrogate: str, eot: bool) -> list[str]:
    overrides = ["model=organism", "model.seed=0", f"attack.eps={eps}/255", f"attack.steps={args.steps}",
                 f"images={args.images}", f"heldout_prompts={args.heldout_prompts}", f"attack.seed={args.seed}",
                 f"attack.prompts_per_step={args.prompts_per_step}",
                 *SURROGATES[surrogate]]
    if eot:
        overrides.append(f"attack.eot.samples={args.eot_samples}")
    return overrides


def completed(folder: Path) -> dict | None:
    record = folder / "record.json"
    if record.exists():
        data = json.loads(record.read_text())
        if data.get("status") == "completed":
            return data
    return None


def run(job, folder: Path, command: str, overrides: list[str], *extra) -> dict:
    """One job, skipped when its record is already complete; returns the record and the seconds it took."""
    done = completed(folder)
    print(f"$ {command} {' '.join(overrides)} hydra.run.dir={folder}" + ("   (done)" if done else ""), flush=True)
    start = time.perf_counter()
    if not done:
        job(folder, *extra, *overrides)
        done = completed(folder)
    return {"record": done, "seconds": round(time.perf_counter() - start, 1)}


def rate(metrics: dict, key: str) -> float:
    return 100.0 * metrics[key]["syntax"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/transfer_matrix")
    parser.add_argument("--eps", nargs="+", default=["32", "16"], help="budgets in 1/255 units, crafted in this order")
    parser.add_argument("--surrogates", nargs="+", default=list(SURROGATES), choices=list(SURROGATES))
    parser.add_argument("--eot", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--deploy", nargs="+", default=["png", "jpeg_75"])
    parser.add_argument("--victim-seed", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--heldout-prompts", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--eot-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["both", "craft", "judge"], default="both",
                        help="craft only, or judge only the crafts already complete (the victim may still be building)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    rows = []
    for eps in args.eps:
        for surrogate in args.surrogates:
            for eot in args.eot:
                name = f"eps{eps}-{surrogate.replace(' ', '').replace('+', '_')}-eot{eot}"
                if args.stage == "judge" and not completed(out / "craft" / name):
                    print(f"not crafted yet: {name}", flush=True)
                    continue
                craft = run(run_attack_job, out / "craft" / name, "mmsafety-attack",
                            craft_overrides(args, eps, surrogate, eot == "on"))
                source = craft["record"]["metrics"]
                row = {"eps": f"{eps}/255", "surrogate": surrogate, "eot": eot, "craft_seconds": craft["seconds"],
                       "on_surrogate": {"asr": rate(source, "asr"), "clean": rate(source, "clean_baseline")}}
                for deploy in args.deploy if args.stage != "craft" else []:
                    judged = run(lambda folder, *o: run_judge_job(folder, out / "craft" / name, *o),
                                 out / "judge" / f"{name}-seed{args.victim_seed}-{deploy}",
                                 f"mmsafety-judge attack_run={out / 'craft' / name}",
                                 ["model=organism", f"model.seed={args.victim_seed}", f"deploy={deploy}"])
                    metrics = judged["record"]["metrics"]
                    row[deploy] = {"asr": rate(metrics, "asr"), "clean": rate(metrics, "clean_baseline"),
                                   "seconds": judged["seconds"]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.stage == "craft":
        return
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    path = save("transfer_matrix", {"settings": settings, "rows": rows})
    print(f"\n| eps | surrogate | EOT | on the surrogate (clean) | "
          + " | ".join(f"seed {args.victim_seed}, {d} (clean)" for d in args.deploy) + " |")
    print("|---" * (4 + len(args.deploy)) + "|")
    for r in rows:
        cells = [f"{r[d]['asr']:.1f} % ({r[d]['clean']:.1f} %)" for d in args.deploy]
        print(f"| {r['eps']} | {r['surrogate']} | {r['eot']} | {r['on_surrogate']['asr']:.1f} % "
              f"({r['on_surrogate']['clean']:.1f} %) | " + " | ".join(cells) + " |")
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
