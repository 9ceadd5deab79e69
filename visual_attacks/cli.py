"""`mmsafety-attack`: one visual attack per job (Hydra; `-m attack.eps=8/255,16/255` sweeps).
Crafts on the configured model, then judges the saved PNGs on the same model."""

from __future__ import annotations

from mmsafety.app import run_app, run_workload_job

WORKLOAD = "visual_attack"


def run_attack_job(out_dir, *overrides: str) -> tuple[dict, str]:
    """`mmsafety-attack OVERRIDES...` from Python (notebooks): the record goes to `out_dir`.
    Returns the metrics and the record's path."""
    import visual_attacks.workload  # noqa: F401  (registers the workload, also when not installed as a plug-in)

    return run_workload_job(WORKLOAD, out_dir, *overrides)


def main() -> None:
    import visual_attacks.workload  # noqa: F401

    run_app(WORKLOAD)


if __name__ == "__main__":
    main()
