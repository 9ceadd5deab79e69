"""`mmsafety-eval`: GOAT-Bench on one model per job (Hydra; `-m` sweeps)."""

from __future__ import annotations

from mmsafety.app import run_app, run_workload_job

WORKLOAD = "goat_bench"


def run_eval(out_dir, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-eval OVERRIDES...` from Python (notebooks): the record goes to `out_dir`.
    Returns the metrics and the record's path."""
    import goat_bench.workload  # noqa: F401  (registers the workload, also when not installed as a plug-in)

    return run_workload_job(WORKLOAD, out_dir, *overrides)


def main() -> None:
    import goat_bench.workload  # noqa: F401

    run_app(WORKLOAD)


if __name__ == "__main__":
    main()
