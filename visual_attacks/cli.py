"""`mmsafety-attack`: one visual attack per job (Hydra; `-m attack.eps=8/255,16/255` sweeps).
Crafts on the configured model, then judges the saved PNGs on the same model.

`mmsafety-judge`: judges an earlier attack run's saved PNGs with another model after a deploy
transform (the transfer workload, visual_attacks.transfer); a sweep folder as `attack_run` is judged
as one job per attack job under it."""

from __future__ import annotations

import sys
from pathlib import Path

from mmsafety.app import run_app, run_workload_job
from visual_attacks.transfer import attack_run_tag, attack_runs_under

WORKLOAD = "visual_attack"
JUDGE_WORKLOAD = "transfer"


def run_attack_job(out_dir, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-attack OVERRIDES...` from Python (notebooks): the record goes to `out_dir`.
    Returns the metrics and the record's path."""
    import visual_attacks.workload  # noqa: F401  (registers the workload, also when not installed as a plug-in)

    return run_workload_job(WORKLOAD, out_dir, *overrides)


def run_judge_job(out_dir, attack_run, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-judge attack_run=ATTACK_RUN OVERRIDES...` for one attack job folder, from Python: the
    transfer record goes to `out_dir`. Returns the metrics and the record's path."""
    import visual_attacks.transfer  # noqa: F401

    resolved = Path(str(attack_run)).expanduser().resolve()  # one job, one folder: however the path is spelled
    return run_workload_job(JUDGE_WORKLOAD, out_dir, f"attack_run={_quoted(resolved)}", *overrides)


def run_judge_jobs(out_dir, attack_run, *overrides: str) -> list[tuple[dict, str]]:
    """Every attack job under `attack_run` (one job folder, or a sweep folder) judged as its own job,
    each record in `out_dir/<attack run tag>`: one transfer-matrix cell per record."""
    return [run_judge_job(Path(out_dir) / attack_run_tag(run), run, *overrides) for run in attack_runs_under(attack_run)]


def _quoted(value) -> str:
    """A path as a quoted Hydra override value (any character but the quote is literal inside)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_sweep_folder(args: list[str]) -> list[str]:
    """The command line with `attack_run=SWEEP_FOLDER` turned into a sweep over every attack job under
    it (`-m attack_run='a','b'`; `hydra.run.dir` becomes `hydra.sweep.dir`), so each job folder is
    judged as its own job with its own record. Anything else is left for the usual checks to judge."""
    out, expanded = [], False
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "attack_run" and value and "," not in value and "'" not in value and '"' not in value:
            runs = attack_runs_under(value)
            resolved = Path(value).expanduser().resolve()
            if runs and (len(runs) > 1 or runs[0] != resolved):
                print(f"attack_run={value} holds {len(runs)} attack run(s): judging each as its own job (a sweep)",
                      file=sys.stderr)
                arg, expanded = "attack_run=" + ",".join(_quoted(r) for r in runs), True
            elif str(resolved) != value:
                # The config hash in the folder name reads attack_run as written: ./runs/x, runs/x and the
                # absolute path must be one job (one folder, one resume), as a sweep folder's jobs are.
                arg = f"attack_run={_quoted(resolved)}"
        out.append(arg)
    if not expanded:
        return out
    out = [("hydra.sweep.dir=" + a.partition("=")[2]) if a.startswith("hydra.run.dir=") else a for a in out]
    return out if any(a in ("-m", "--multirun") for a in out) else ["-m", *out]


def main() -> None:
    import visual_attacks.workload  # noqa: F401

    run_app(WORKLOAD)


def judge_main() -> None:
    import visual_attacks.transfer  # noqa: F401

    sys.argv = [sys.argv[0], *expand_sweep_folder(sys.argv[1:])]
    run_app(JUDGE_WORKLOAD)


if __name__ == "__main__":
    main()
