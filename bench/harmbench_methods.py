"""HarmBench's multimodal methods on the victim organism: `python -m bench.harmbench_methods [--prompt-format F]`.

Each method is one ordinary attack job (`mmsafety-attack model=harmbench_victim attack=<method>`) on the
12 synthetic held-out behaviours, completions of 48 tokens, judged in the job by the judge organism
(`harmbench_cls`) and re-judged by `refusal_substring` as a record of its own. One row per method x judge
goes to bench/results/harmbench_methods.jsonl with the load average before and after (2 shared cores:
times are not comparable between rows, the rates are).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench._common import save

METHODS = (  # (attack preset, HarmBench's class, extra overrides)
    ("direct_request", "MultiModalDirectRequest", ()),
    ("render_text", "MultiModalRenderText", ()),
    ("harmbench_pgd", "MultiModalPGD", ()),
    ("harmbench_pgd_blank", "MultiModalPGDBlankImage", ()),
    ("harmbench_pgd_patch", "MultiModalPGDPatch", ()),
)
CATEGORIES = ("chemical_biological", "cybercrime_intrusion", "harmful", "illegal")


def rows_of(folder: Path) -> tuple[dict, list[dict]]:
    import json

    from harmbench.metrics import attack_success_rate
    from mmsafety.records import read_samples

    samples = [s for s in read_samples(folder / "samples.jsonl") if s["status"] == "ok"]
    category = {s["base"]["behavior_id"]: s["base"]["semantic_category"] for s in samples}
    asr = attack_success_rate([(s["base"]["behavior_id"], r["label"]) for s in samples for r in s["outputs"]["adversarial"]], category)
    start = attack_success_rate([(s["base"]["behavior_id"], r["label"]) for s in samples for r in s["outputs"]["clean"]], category)
    record = json.loads((folder / "record.json").read_text())
    return {"asr": asr, "start": start, "record": record}, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-format", default="harmbench", choices=("harmbench", "chat_template"))
    parser.add_argument("--out", default="runs/bench_harmbench_methods")
    parser.add_argument("--methods", nargs="*", default=[m for m, _, _ in METHODS])
    args = parser.parse_args()
    from harmbench.cli import run_score
    from visual_attacks.cli import run_attack_job

    for method, harmbench_name, extra in METHODS:
        if method not in args.methods:
            continue
        folder = Path(args.out) / args.prompt_format / method
        load_before = os.getloadavg()[0]
        begin = time.perf_counter()
        run_attack_job(folder, "model=harmbench_victim", f"attack={method}", "case=harmbench_behaviors",
                       "case.max_new_tokens=48", f"case.prompt_format={args.prompt_format}", *extra)
        run_score(["judge=refusal_substring", f"record={folder}"])
        seconds = time.perf_counter() - begin
        load_after = os.getloadavg()[0]
        for judge, sub in (("harmbench_cls (judge organism)", ""), ("refusal_substring", "judged-refusal_substring")):
            result, samples = rows_of(folder / sub if sub else folder)
            asr, spec = result["asr"], result["record"]["spec"]
            row = {
                "source": "python -m bench.harmbench_methods", "model": "harmbench_victim", "behaviours": len(samples),
                "max_new_tokens": 48, "method": harmbench_name, "prompt_format": spec.get("prompt_format", args.prompt_format),
                "steps": spec["steps"], "eps": spec["eps"], "judge": judge,
                "asr": round(asr["asr"], 3), "asr_ci95": f"[{asr['ci95'][0]:.2f}, {asr['ci95'][1]:.2f}]",
                "asr_by_category (chem/bio, cyber, harmful, illegal)": " / ".join(
                    f"{asr['by_category'][c]['asr']:.2f}" if c in asr["by_category"] else "-" for c in CATEGORIES),
                "start_image_asr": round(result["start"]["asr"], 3),
                "steps_run_mean": round(sum(s["steps_run"] for s in samples) / len(samples), 1),
                "stopped_early": sum(s["steps_run"] < spec["steps"] for s in samples),
                "linf_of_change": round(max(s["stealth"]["linf"] for s in samples), 3),
                "wall_seconds": round(seconds), "load_average_1min": [round(load_before, 1), round(load_after, 1)],
            }
            print(row)
            save("harmbench_methods", row)


if __name__ == "__main__":
    main()
