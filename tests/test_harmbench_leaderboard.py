"""The HarmBench leaderboard table from real records: DirectRequest and MultiModalPGD attack runs on
the victim organism (synthetic behaviours), judged by the judge organism in the job and re-judged by
refusal_substring as records of their own; every cell checked against harmbench.metrics."""

from __future__ import annotations

import csv
import io
import json

import pytest

from harmbench.metrics import attack_success_rate
from harmbench.templates import jailbroken_by_prefixes
from mmsafety.records import read_samples

# The victim was fine-tuned on its chat template: HarmBench's raw LLaVA prompt is off its training
# distribution, and 10 PGD steps move it less (bench/results/harmbench_methods.jsonl has both formats).
VICTIM = ["model=harmbench_victim", "case=harmbench_behaviors", "case.max_new_tokens=40", "case.limit=6",
          "case.prompt_format=chat_template"]
CLS = "harmbench_cls(harmbench_judge)"


@pytest.fixture(scope="module")
def harmbench_runs(tmp_path_factory):
    """runs/{direct,pgd} judged by the judge organism, and each re-judged by refusal_substring."""
    from harmbench.cli import run_score
    from visual_attacks.cli import run_attack_job

    runs = tmp_path_factory.mktemp("harmbench_runs")
    for name, attack in (("direct", "direct_request"), ("pgd", "harmbench_pgd")):
        run_attack_job(runs / name, f"attack={attack}", *VICTIM)
        run_score(["judge=refusal_substring", f"record={runs / name}"])
    return runs


def reference(folder) -> dict:
    """HarmBench's ASR of a record's test cases, computed from its samples by harmbench.metrics."""
    samples = [s for s in read_samples(folder / "samples.jsonl") if s["status"] == "ok"]
    labels = [(s["base"]["behavior_id"], r["label"]) for s in samples for r in s["outputs"]["adversarial"]]
    return attack_success_rate(labels, {s["base"]["behavior_id"]: s["base"]["semantic_category"] for s in samples})


def pct(value):
    return round(100 * value, 1)


@pytest.mark.slow
def test_table_rows_are_model_method_judge_with_direct_request_as_baseline(harmbench_runs, tmp_path):
    from mmsafety.leaderboard import write_leaderboard

    summary = write_leaderboard([harmbench_runs], tmp_path)
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert summary["rows"]["harmbench"] == 4 and board["attacks"] == []  # the generic table leaves them to the case
    rows = {(r["method"], r["judge"]): r for r in board["harmbench"]}
    assert set(rows) == {(m, j) for m in ("MultiModalDirectRequest", "MultiModalPGD") for j in (CLS, "refusal_substring")}
    folders = {(m, j): harmbench_runs / run / sub for m, run in (("MultiModalDirectRequest", "direct"), ("MultiModalPGD", "pgd"))
               for j, sub in ((CLS, ""), ("refusal_substring", "judged-refusal_substring"))}
    for key, row in rows.items():
        ref = reference(folders[key])
        assert row["asr"] == pct(ref["asr"]) and row["behaviors"] == ref["behaviors"] == 6, (key, row, ref)
        assert (row["asr_ci95_low"], row["asr_ci95_high"]) == (pct(ref["ci95"][0]), pct(ref["ci95"][1]))
        for category, cell in ref["by_category"].items():
            assert row[f"asr[{category}]"] == pct(cell["asr"])
        # The baseline column is the DirectRequest run's ASR under the same judge.
        assert row["direct_request_asr"] == rows[("MultiModalDirectRequest", key[1])]["asr"]
    for judge in (CLS, "refusal_substring"):  # the signal: the image attack raises ASR from ~0
        assert rows[("MultiModalDirectRequest", judge)]["asr"] == 0.0
        assert rows[("MultiModalPGD", judge)]["asr"] >= 50.0, rows[("MultiModalPGD", judge)]
    # The re-judged record holds refusal_substring's labels of the very completions the job stored.
    for run in ("direct", "pgd"):
        source = read_samples(harmbench_runs / run / "samples.jsonl")
        judged = read_samples(harmbench_runs / run / "judged-refusal_substring" / "samples.jsonl")
        assert [r["generation"] for s in judged for r in s["outputs"]["adversarial"]] == \
               [r["generation"] for s in source for r in s["outputs"]["adversarial"]]
        assert [r["label"] for s in judged for r in s["outputs"]["adversarial"]] == \
               [int(jailbroken_by_prefixes(r["generation"])) for s in source for r in s["outputs"]["adversarial"]]
    # The judge stage: batched completions of the saved PNGs equal the job's own, one by one.
    from harmbench.stage import complete_record
    from mmsafety.app import load_preset

    pgd = read_samples(harmbench_runs / "pgd" / "samples.jsonl")
    assert max(s["stealth"]["linf"] for s in pgd) <= 0.125 + 1 / 255
    path = complete_record(harmbench_runs / "pgd", load_preset("harmbench_victim"), max_new_tokens=40, batch_size=6)
    staged = [json.loads(line)["generation"] for line in path.read_text().splitlines()]
    assert staged == [s["outputs"]["adversarial"][0]["generation"] for s in pgd]
    # Every format carries the table: CSV rows of table harmbench, a Markdown and an HTML table.
    table = [r for r in csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text())) if r["table"] == "harmbench"]
    assert sorted(float(r["asr"]) for r in table) == sorted(r["asr"] for r in rows.values())
    assert sorted(r["direct_request_asr"] for r in table) == ["0.0"] * 4
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "## HarmBench multimodal behaviours" in markdown and "| MultiModalPGD |" in markdown
    assert "direct_request_asr" in markdown
    page = (tmp_path / "leaderboard.html").read_text()
    assert "<h2>HarmBench multimodal behaviours" in page and ">harmbench_cls(harmbench_judge)</td>" in page


@pytest.mark.slow
def test_a_missing_baseline_run_leaves_the_column_empty(harmbench_runs, tmp_path):
    from mmsafety.leaderboard import write_leaderboard

    write_leaderboard([harmbench_runs / "pgd"], tmp_path)
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert len(board["harmbench"]) == 2 and all(r["direct_request_asr"] is None for r in board["harmbench"])


def test_rejudging_a_folder_that_is_not_a_harmbench_run_is_one_line(tmp_path):
    from harmbench.cli import run_score
    from mmsafety.errors import UserError

    with pytest.raises(UserError, match="no readable record.json"):
        run_score(["judge=refusal_substring", f"record={tmp_path}"])
    (tmp_path / "record.json").write_text(json.dumps({"kind": "goat_bench", "status": "completed"}))
    with pytest.raises(UserError, match="not a HarmBench attack record"):
        run_score(["judge=refusal_substring", f"record={tmp_path}"])


@pytest.mark.slow
def test_a_record_whose_samples_the_table_cannot_read_shows_its_own_mean(harmbench_runs, tmp_path):
    """A judge-stage record names PNGs in another run's folder (absolute paths, which the record schema
    keeps out of scoring): the row falls back to the record's mean, without an interval, and says so."""
    import shutil

    run = tmp_path / "pgd"
    shutil.copytree(harmbench_runs / "pgd", run, ignore=shutil.ignore_patterns("judged-*"))
    samples = read_samples(run / "samples.jsonl")
    for s in samples:
        s["adversarial_png"] = str((run / s["adversarial_png"]).resolve())
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    from mmsafety.leaderboard import write_leaderboard

    write_leaderboard([run], tmp_path / "board")
    [row] = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["harmbench"]
    recorded = json.loads((run / "record.json").read_text())["metrics"]["asr"]["harmful"]
    assert row["asr"] == pct(recorded) == pct(reference(harmbench_runs / "pgd")["asr"])
    assert row["asr_ci95"] is None and "no interval" in row["note"]
