"""`make mutation`: mutation testing of the core with mutmut, one module group at a time.

Each group names the modules to mutate and the test files that cover them. mutmut reads one config per
folder, so each group runs in its own scratch copy of the tracked files (under .cache/mutation/GROUP,
git-ignored) with the base settings of `[tool.mutmut]` in pyproject.toml plus the group's
`only_mutate` and test selection. Inside a group, mutmut runs for each mutant only the tests that
executed the mutated function (its stats phase), so a group costs about its mutants times the few
covering tests.

    python -m tests.mutation                  # the core groups (DEFAULT_GROUPS): what `make mutation` runs
    python -m tests.mutation pgd metrics      # the named groups
    python -m tests.mutation --list           # the groups and their tests

Prints per group: mutants, killed, survived, timeouts, the score (killed + timeouts over the mutants
tested), and the survivors' names (`mutmut show NAME` in the group's folder prints the diff).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".cache" / "mutation"

# group -> (modules to mutate, tests that cover them: files or node ids). Tests that need no trained
# organism where possible (the organism makes each mutant cost a minute). A group may also name mutant
# globs in MUTANTS (default: every mutant of its modules).
# The property tests by name: the whole file also runs the PGD properties, minutes per mutant.
PROPS = "tests/test_properties.py::"
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "pgd_projection": (["visual_attacks/pgd.py"],
                       ["tests/test_pgd.py::test_budget_and_box_hold", "tests/test_pgd.py::test_quantized_iterates_are_on_the_8bit_grid",
                        "tests/test_properties.py::test_every_pgd_iterate_stays_in_the_ball_and_the_box",
                        "tests/test_properties.py::test_quantised_linf_iterates_stay_on_the_8_bit_grid_inside_the_ball",
                        "tests/test_properties.py::test_the_projection_is_the_nearest_feasible_point"]),
    # The PGD properties by name (the file's GOAT properties cover nothing here), the restarts, checkpoints
    # and signals, the ensemble's own-gradient path, and the paper protocols' PGD tests by name.
    "pgd": (["visual_attacks/pgd.py"],
            ["tests/test_pgd.py", "tests/test_mutation_pgd.py", "tests/test_pgd_restarts.py", "tests/test_progress_resume.py",
             "tests/test_preemption.py",
             "tests/test_ensemble.py",
             *(f"tests/test_paper_protocols.py::{name}" for name in (
                 "test_sgd_moves_the_image_by_the_raw_gradient", "test_adam_is_the_signed_bias_corrected_adam_direction",
                 "test_keep_best_with_a_validation_score_ignores_a_lucky_batch",
                 "test_universal_objectives_score_a_fixed_validation_batch",
                 "test_unconstrained_random_start_is_uniform_noise_whatever_the_image",
                 "test_linf_random_start_is_x0_plus_uniform_eps", "test_harmbench_stops_once_the_loss_is_below_001",
                 "test_attack_killed_mid_run_resumes_bit_identically",
                 "test_a_saved_attack_state_is_resumed_only_by_the_config_that_saved_it")),
             "tests/test_known_values.py::test_keep_best_returns_an_earlier_iterate_when_the_last_one_overshoots",
             f"{PROPS}test_every_pgd_iterate_stays_in_the_ball_and_the_box",
             f"{PROPS}test_quantised_linf_iterates_stay_on_the_8_bit_grid_inside_the_ball",
             f"{PROPS}test_the_projection_is_the_nearest_feasible_point",
             f"{PROPS}test_a_pgd_attack_killed_and_resumed_from_its_checkpoint_equals_an_uninterrupted_one"]),
    "metrics": (["goat_bench/metrics.py"],
                ["tests/test_goat_metrics.py", "tests/test_known_values.py", "tests/test_mutation_metrics.py",
                 f"{PROPS}test_task_metrics_are_order_free_and_equal_counting_by_hand",
                 f"{PROPS}test_scores_of_a_run_are_order_free"]),
    "stealth": (["visual_attacks/stealth.py"],
                ["tests/test_known_values.py", "tests/test_transfer_board.py", "tests/test_mutation_kills.py",
                 "tests/test_attack_cases.py::test_lpips_reported_only_when_alexnet_weights_are_on_disk"]),
    # The adapter contract by name: the whole file loads every tiny family per mutant (minutes each).
    "sequences": (["mmsafety/models/sequences.py"],
                  ["tests/test_answer_spellings.py", "tests/test_mutation_sequences.py",
                   "tests/test_adapter_contract.py::test_cached_choice_scoring_equals_appended_scoring",
                   "tests/test_adapter_contract.py::test_choice_logprobs"]),
    "records": (["mmsafety/records.py"],
                ["tests/test_records.py", "tests/test_atomic_writes.py", "tests/test_resume_shared_ids.py",
                 "tests/test_mutation_kills.py",
                 "tests/test_reliability_hostile.py::test_resume_sets_unusable_sample_lines_aside_and_redoes_them",
                 "tests/test_reliability_hostile.py::test_a_previous_record_that_is_a_bomb_counts_as_no_record",
                 "tests/test_reliability_hostile.py::test_atomic_writes_respect_the_umask"]),
    "evaluate": (["goat_bench/evaluate.py"],
                 ["tests/test_resume_shared_ids.py", "tests/test_goat_metrics.py",
                  f"{PROPS}test_scores_of_a_run_are_order_free",
                  f"{PROPS}test_a_goat_run_interrupted_after_any_batch_and_resumed_equals_an_uninterrupted_one"]),
    # tests/test_leaderboard.py's fixtures run the organism through the CLI (half a minute per mutant): its
    # in-process tests by name, and hand-written run folders (test_mutation_leaderboard.py) instead.
    "leaderboard": (["mmsafety/leaderboard/collect.py"],
                    ["tests/test_mutation_leaderboard.py",
                     "tests/test_leaderboard.py::test_cli_reports_empty_and_missing_inputs",
                     "tests/test_leaderboard.py::test_thumbnail_of_a_damaged_or_missing_image_is_left_out",
                     "tests/test_reliability_hostile.py::test_leaderboard_lists_bad_records_under_problems_and_writes_the_rest",
                     "tests/test_reliability_hostile.py::test_leaderboard_leaves_out_unusable_samples_and_says_so",
                     f"{PROPS}test_merging_overlapping_repeated_shards_in_any_order_gives_the_run"]),
    "targets_judges": (["visual_attacks/targets.py", "visual_attacks/judge.py"],
                       ["tests/test_targets.py", "tests/test_mutation_targets.py", "tests/test_mutation_judge.py",
                        "tests/test_judge_protocol.py"]),
    "deploy": (["visual_attacks/deploy.py"],
               ["tests/test_deploy.py", "tests/test_eot_deploy.py", "tests/test_mutation_kills.py", "tests/test_mutation_deploy.py",
                "tests/test_transfer_board.py"]),
    "served_accounting": (["mmsafety/served/client.py", "mmsafety/served/accounting.py"],
                          ["tests/test_served_units.py", "tests/test_served_faults.py", "tests/test_mutation_served.py",
                           "tests/test_run_truth.py::test_accounting_adds_up_over_invocations"]),
}
# The core modules the docs report on. `pgd_projection` (the projection alone, with its feasibility tests) is
# inside `pgd`; `evaluate` (the GOAT-Bench run loop, not a core module: resume is keyed in records.py) runs
# when named.
DEFAULT_GROUPS = ["deploy", "targets_judges", "served_accounting", "stealth", "records", "sequences", "metrics", "pgd",
                  "leaderboard"]
MUTANTS: dict[str, list[str]] = {
    "pgd_projection": ["visual_attacks.pgd.x__project__mutmut_*"],
}


def base_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def cfg_value(value) -> str:
    if isinstance(value, list):
        return "\n" + "\n".join(f"    {v}" for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def prepare(group: str) -> Path:
    """A scratch copy of the tracked files with the group's config as setup.cfg (and pyproject's
    [tool.mutmut] removed there, since mutmut prefers it over setup.cfg)."""
    modules, tests = GROUPS[group]
    folder = SCRATCH / group
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    if folder.exists():
        shutil.rmtree(folder)
    for name in tracked:
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    pyproject = (folder / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(re.sub(r"\n\[tool\.mutmut\]\n.*", "\n", pyproject, flags=re.S))
    config = {**base_config(), "only_mutate": modules, "pytest_add_cli_args_test_selection": tests}
    (folder / "setup.cfg").write_text("[mutmut]\n" + "".join(f"{k} = {cfg_value(v)}\n" for k, v in config.items()))
    return folder


def run_group(group: str, max_children: int) -> dict:
    start = time.monotonic()
    folder = prepare(group)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts its mutants/ first itself
    # One torch thread per core between the children (torch takes every core per process by default: two
    # children on two cores would run four threads). As the documented times were measured.
    threads = str(max(1, (os.cpu_count() or 1) // max_children))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **env}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(max_children), *MUTANTS.get(group, [])], cwd=folder, env=env,
                   check=True)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=folder, env=env, check=True,
                             capture_output=True, text=True).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        if ":" in line:
            name, status = line.rsplit(":", 1)
            statuses[name.strip()] = status.strip()
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    tested = caught + counts.get("survived", 0)
    return {"group": group, "modules": GROUPS[group][0], "seconds": round(time.monotonic() - start), "counts": counts,
            "score": round(100 * caught / tested, 1) if tested else None,
            "survivors": sorted(n for n, s in statuses.items() if s == "survived")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: {' '.join(DEFAULT_GROUPS)}); any of "
                                                  f"{', '.join(GROUPS)}")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.list:
        for group, (modules, tests) in GROUPS.items():
            print(f"{group}: {' '.join(modules)} <- {' '.join(tests)}")
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; use one of {', '.join(GROUPS)}")
    started = datetime.now(timezone.utc)
    reports = [run_group(g, args.max_children) for g in args.groups or DEFAULT_GROUPS]
    for report in reports:
        print(json.dumps(report))
    print(summary(reports, started))
    (SCRATCH / "report.json").write_text(json.dumps({"started": started.isoformat(timespec="seconds"),
                                                     "load_at_end": os.getloadavg(), "groups": reports}, indent=2))
    return 0


def summary(reports: list[dict], started: datetime) -> str:
    """One line per group and the total: mutants, killed, timeouts (counted as caught, as mutmut counts them),
    survived, with no covering test, the score (caught over tested) and the wall time."""
    lines = [f"mutation testing started {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load now "
             f"{os.getloadavg()[0]:.1f}",
             f"{'group':<18} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'no test':>7} {'score':>7} "
             f"{'time':>7}"]
    totals = [0] * 6
    for r in reports:
        c = r["counts"]
        row = [sum(c.values()), c.get("killed", 0), c.get("timeout", 0), c.get("survived", 0), c.get("no tests", 0),
               r["seconds"]]
        totals = [t + v for t, v in zip(totals, row)]
        lines.append(f"{r['group']:<18} {row[0]:>7} {row[1]:>7} {row[2]:>7} {row[3]:>8} {row[4]:>7} "
                     f"{r['score'] or 0:>6}% {row[5] // 60:>4}:{row[5] % 60:02d}")
    tested = totals[1] + totals[2] + totals[3]
    score = 100 * (totals[1] + totals[2]) / tested if tested else 0
    lines.append(f"{'total':<18} {totals[0]:>7} {totals[1]:>7} {totals[2]:>7} {totals[3]:>8} {totals[4]:>7} "
                 f"{score:>6.1f}% {totals[5] // 60:>4}:{totals[5] % 60:02d}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
