"""Leaderboard rows (mmsafety/leaderboard/collect.py) from run folders written by hand here, in process and in
well under a second each: shards and repeats merged, statuses, models, notes, sorting. Every expected value is
worked out from the records and samples the test writes (accuracy by counting the right answers). Written for
`make mutation` (its `leaderboard` group): tests/test_leaderboard.py checks the same on real runs, but its
fixtures run the organism through the CLI, half a minute per mutant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsafety.leaderboard.collect import Row, build_rows, find_records


def record(**changes) -> dict:
    """A GOAT-Bench record that the schema accepts; `changes` replace its top-level fields."""
    task = {"n": 4, "accuracy": 75.0, "macro_f1": 70.0, "skipped": 0, "invalid_rate": 0.0}
    base = {"schema_version": 1, "kind": "goat_bench", "status": "completed", "config": {"seed": 0},
            "config_sha256": "x", "model": {"name": "m"},
            "spec": {"workload": "goat_bench", "tasks": ["sarcasm"], "scoring": "logprob", "synthetic": True,
                     "sample_key": ["task", "id"]},
            "metrics": {"per_task": {"sarcasm": task}, "overall": task},
            "counts": {"ok": 4, "skipped": 0, "errors": 0}, "timing": {"seconds": 1.0}}
    return {**base, **changes}


def sample(i: int, label: int, pred: int | None, status: str = "ok") -> dict:
    if status != "ok":
        return {"task": "sarcasm", "id": str(i), "status": status, "label": label, "reason": "r"}
    return {"task": "sarcasm", "id": str(i), "status": "ok", "label": label, "pred": pred, "correct": pred == label}


def write(folder: Path, rec: dict, samples: list[dict] = ()) -> Path:
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(rec))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder / "record.json"


def sharded(index: int, count: int = 2, **changes) -> dict:
    rec = record(**changes)
    return {**rec, "spec": {**rec["spec"], "shard": {"index": index, "count": count}}, "metrics": {}}


def test_two_shards_are_one_row_scored_from_their_merged_samples(tmp_path):
    # Shard 0: ids 0-3, 3 right; shard 1: ids 4-7, 1 right. The whole: 4 of 8 right = 50 %, which
    # neither shard's own accuracy (75, 25) nor a count-free mean of the two would tell apart.
    write(tmp_path / "a", sharded(0), [sample(0, 1, 1), sample(1, 0, 0), sample(2, 1, 1), sample(3, 0, 1)])
    write(tmp_path / "b", sharded(1, timing={"seconds": 7.5}),
          [sample(4, 1, 0), sample(5, 0, 0), sample(6, 1, 0), sample(7, 0, 1)])
    rows, problems = build_rows([tmp_path])
    assert problems == [] and len(rows) == 1
    row = rows[0]
    assert row.workload == "goat_bench" and row.model == "m" and row.data == "synthetic"
    assert row.records == [tmp_path / "a" / "record.json", tmp_path / "b" / "record.json"]
    assert row.statuses == ["completed", "completed"] and row.status == "completed" and row.shards == ""
    assert row.samples == 8 and row.seconds == 7.5
    assert row.metrics["per_task"]["sarcasm"]["accuracy"] == pytest.approx(50.0)
    assert row.metrics["per_task"]["sarcasm"]["n"] == 8
    assert row.note == "merged from 2 records"
    assert [a["folder"] for a in row.artifacts] == [tmp_path / "a", tmp_path / "b"]
    assert row.artifacts[1]["first_sample"]["id"] == "4" and len(row.artifacts[0]["samples"]) == 4


def test_an_answer_wins_over_a_skip_and_a_skip_over_an_error_whatever_the_order(tmp_path):
    first = [sample(0, 1, None, "error"), sample(1, 1, 1), sample(2, 0, None, "skipped"), sample(3, 1, 1)]
    again = [sample(0, 1, 1), sample(1, 1, 0), sample(2, 0, None, "error"), sample(3, 1, None, "skipped")]
    for order in ((first, again), (again, first)):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        write(root / "1", record(status="partial", metrics={}), order[0])
        write(root / "2", record(metrics={}), order[1])
        [row], _ = build_rows([root])
        # id 0: the answer (right); id 1: the first answer seen; id 2: the skip; id 3: the answer.
        assert row.samples == 4 and row.status == "partial"
        per_task = row.metrics["per_task"]["sarcasm"]
        assert per_task["n"] == 3 and per_task["skipped"] == 1 and per_task["errors"] == 0
        right = 3 if order[0] is first else 2  # id 1 is right in `first`, wrong in `again`
        assert per_task["accuracy"] == pytest.approx(100 * right / 3)


def test_a_missing_shard_makes_the_row_partial_and_says_how_many_it_has(tmp_path):
    write(tmp_path / "a", sharded(1, count=3), [sample(0, 1, 1)])
    [row], _ = build_rows([tmp_path])
    assert row.shards == "1/3" and row.status == "partial" and row.status_label == "partial (shards 1/3)"
    assert "merged" not in row.note
    complete = Row("goat_bench", "m", {}, statuses=["completed"])
    assert complete.status == "completed" and complete.status_label == "completed"
    assert Row("goat_bench", "m", {}, statuses=["completed", "failed", "partial"]).status == "failed"
    assert Row("goat_bench", "m", {}, statuses=["failed"], shards="1/2", reported=True).status_label == "reported"


def test_one_completed_record_keeps_its_own_metrics_and_counts_its_errors(tmp_path):
    write(tmp_path / "r", record(counts={"ok": 8, "skipped": 1, "errors": 2}, timing={"seconds": 3.0}))
    [row], problems = build_rows([tmp_path / "r" / "record.json"])
    assert problems == [] and row.metrics == record()["metrics"]
    assert row.samples == 11 and row.seconds == 3.0
    assert row.note == "2 errored, metrics over 8 answered"


def test_merged_errors_are_counted_over_the_answered_samples(tmp_path):
    write(tmp_path / "a", sharded(0), [sample(0, 1, 1), sample(1, 1, None, "error"), sample(2, 0, 0)])
    write(tmp_path / "b", sharded(1), [sample(3, 1, None, "error"), sample(4, 0, 1)])
    [row], _ = build_rows([tmp_path])
    assert row.note == "2 errored, metrics over 3 answered; merged from 2 records"


def test_a_failed_run_is_named_by_its_configured_model_and_noted_with_its_error(tmp_path):
    write(tmp_path / "f", record(status="failed", model={}, error="CUDA out of memory",
                                 config={"model": {"name": "", "name_or_path": "org/vlm", "builder": "b"}}, metrics={}))
    write(tmp_path / "g", record(status="failed", model={"name": ""}, error="boom",
                                 config={"model": {"builder": "tiny"}}, metrics={}, spec={"workload": "goat_bench", "tasks": ["x"]}))
    write(tmp_path / "h", record(status="failed", model={}, config={"model": "not a mapping"}, metrics={},
                                 spec={"workload": "goat_bench", "tasks": ["y"]}))
    rows, _ = build_rows([tmp_path])
    by_model = {row.model: row for row in rows}
    assert set(by_model) == {"org/vlm", "tiny", "?"}
    assert by_model["org/vlm"].error == "CUDA out of memory" and by_model["org/vlm"].note.startswith("CUDA out of memory")
    assert by_model["org/vlm"].status == "failed"
    assert by_model["?"].error == "" and by_model["?"].note == ""


def test_records_that_differ_in_config_are_rows_whose_notes_say_how(tmp_path):
    write(tmp_path / "a", record(config={"seed": 0, "model": {"cache_path": "/x"}, "retries": 3}))
    write(tmp_path / "b", record(config={"seed": 0, "model": {"cache_path": "/y"}}))
    rows, _ = build_rows([tmp_path])
    notes = sorted(row.note for row in rows)
    assert notes == ['config differs: model.cache_path="/x", retries=3',
                     'config differs: model.cache_path="/y", retries=(unset)']


def test_a_config_note_shows_four_keys_and_counts_the_rest(tmp_path):
    many = {f"k{i}": i for i in range(6)}
    write(tmp_path / "a", record(config=many))
    write(tmp_path / "b", record(config={}, counts={"ok": 4, "skipped": 0, "errors": 1}))
    rows, _ = build_rows([tmp_path])
    notes = sorted(row.note for row in rows)
    assert notes == ["1 errored, metrics over 4 answered; config differs: k0=(unset), k1=(unset), k2=(unset), "
                     "k3=(unset) and 2 more",
                     "config differs: k0=0, k1=1, k2=2, k3=3 and 2 more"]


def test_shards_and_notes_aside_the_same_job_is_one_row_and_another_model_another(tmp_path):
    write(tmp_path / "a", sharded(0), [sample(0, 1, 1)])
    rec = sharded(1)
    write(tmp_path / "b", {**rec, "spec": {**rec["spec"], "notes": "second half"}, "config": {"seed": 0, "shard": 1}},
          [sample(1, 0, 0)])
    write(tmp_path / "c", record(model={"name": "m", "weights_sha256": "other"}))
    write(tmp_path / "d", record(model={"name": "a-model"}))
    rows, problems = build_rows([tmp_path])
    assert problems == []
    # Sorted by workload, model, then the spec as sorted JSON: the sharded spec's "shard" key comes before
    # "synthetic", where the other's spec goes on.
    assert [(r.model, len(r.records)) for r in rows] == [("a-model", 1), ("m", 2), ("m", 1)]
    assert rows[1].note == "merged from 2 records" and rows[2].note == ""


def test_unreadable_invalid_and_uninstalled_records_are_problems_not_rows(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{not json")
    write(tmp_path / "alien", record(kind="not_installed_" + "x" * 100))
    write(tmp_path / "ok", record())
    rows, problems = build_rows([tmp_path])
    assert len(rows) == 1 and len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'alien' / 'record.json'}: skipped, workload 'not_installed_")
    assert "xxx' is not installed (installed: " in problems[0] and "goat_bench" in problems[0]
    assert len(problems[0].split("'")[1]) == 80  # the kind is cut at 80 characters
    assert problems[1].startswith(f"{tmp_path / 'bad' / 'record.json'}: skipped, unreadable (")


def test_find_records_takes_files_and_folders_once_each_in_order(tmp_path):
    a = write(tmp_path / "a", record())
    b = write(tmp_path / "sweep" / "0" / "b", record())
    (tmp_path / "notes.txt").write_text("x")
    assert find_records([tmp_path, a, tmp_path / "notes.txt", tmp_path / "missing"]) == sorted([a, b])
    assert find_records([tmp_path / "notes.txt"]) == []


def test_records_that_ran_different_specs_or_weights_or_workloads_are_different_rows(tmp_path):
    from mmsafety.leaderboard.collect import _identity

    write(tmp_path / "a", record())
    rec = record()
    write(tmp_path / "b", {**rec, "spec": {**rec["spec"], "tasks": ["harmfulness"]}})
    rows, _ = build_rows([tmp_path])
    assert sorted(tuple(r.spec["tasks"]) for r in rows) == [("harmfulness",), ("sarcasm",)]
    # The workload and the weights are part of what ran, as the spec is.
    assert _identity(rec) != _identity({**rec, "kind": "visual_attack"})
    assert _identity(rec) != _identity({**rec, "model": {"name": "m", "weights_sha256": "f" * 64}})
    assert _identity(rec) == _identity({**rec, "spec": {**rec["spec"], "shard": {"index": 1, "count": 2}, "notes": "x"}})


def test_the_order_of_keys_in_a_record_changes_no_row(tmp_path):
    """Two shards of one job whose JSON lists the same fields in another order: one row, and no note of a
    difference (a list of mappings in the config compares by content, not by key order)."""
    a, b = sharded(0), sharded(1)
    a["config"] = {"seed": 0, "model": {"name": "m", "retry": [{"a": 1, "b": 2}]}}
    b["config"] = {"model": {"retry": [{"b": 2, "a": 1}], "name": "m"}, "seed": 0}
    b["spec"] = dict(reversed(list(b["spec"].items())))
    write(tmp_path / "a", a, [sample(0, 1, 1)])
    write(tmp_path / "b", b, [sample(1, 0, 0)])
    c = record(config={"seed": 1, "model": {"retry": [{"b": 2, "a": 1}], "name": "m"}})
    c["spec"] = {**c["spec"], "shard": {"index": 0, "count": 2}}
    write(tmp_path / "c", {**c, "metrics": {}}, [sample(0, 1, 1), sample(1, 0, 0)])
    rows, _ = build_rows([tmp_path])
    assert sorted(len(r.records) for r in rows) == [1, 2]
    assert sorted(r.note for r in rows) == ["config differs: seed=1", "merged from 2 records; config differs: seed=0"]


def test_a_job_that_has_just_started_or_a_record_without_model_is_a_row_not_a_crash(tmp_path):
    started = record(status="partial", metrics={})
    del started["spec"], started["model"]
    write(tmp_path / "s", started)
    [row], problems = build_rows([tmp_path])
    assert problems == [] and row.status == "partial" and row.spec == {} and row.model == "?" and row.metrics == {}
    # The schema lets a record without a config through too (a job that failed before composing one).
    bare = record(status="failed", model={}, error="e", metrics={})
    del bare["config"]
    write(tmp_path / "b", bare)
    rows, problems = build_rows([tmp_path / "b"])
    assert problems == [] and [r.model for r in rows] == ["?"]


def test_a_configured_model_name_comes_first(tmp_path):
    write(tmp_path / "f", record(status="failed", model={}, error="e", metrics={},
                                 config={"model": {"name": "cfg-name", "name_or_path": "org/x"}}))
    [row], _ = build_rows([tmp_path])
    assert row.model == "cfg-name"


def test_artifacts_hold_the_record_and_only_the_samples_the_scoring_can_use(tmp_path):
    rec = record(status="partial", metrics={})
    folder = tmp_path / "r"
    write(folder, rec, [sample(0, 1, 1), {"task": "sarcasm", "id": "x", "status": "ok", "label": [1], "pred": 1}])
    write(tmp_path / "empty", record(model={"name": "other"}))
    rows, problems = build_rows([tmp_path])
    by_model = {row.model: row for row in rows}
    [art] = by_model["m"].artifacts
    assert art["record"] == rec and art["folder"] == folder
    assert [s["id"] for s in art["samples"]] == ["0"] and art["first_sample"]["id"] == "0"
    assert by_model["other"].artifacts[0]["first_sample"] == {} and by_model["other"].artifacts[0]["samples"] == []
    assert len(problems) == 1 and "1 line(s) left out" in problems[0]


def test_reference_rows_are_each_workload_s_reported_rows_once():
    from mmsafety.leaderboard.collect import reference_rows
    from mmsafety.leaderboard.views import VIEWS

    reported = VIEWS.get("goat_bench").reported_rows()
    assert reported  # GOAT-Bench's Table 2
    measured = [Row("goat_bench", "a", {}), Row("goat_bench", "b", {}), Row("no_views_here", "c", {})]
    rows = reference_rows(measured)
    assert len(rows) == len(reported)
    for row, ref in zip(rows, reported):
        assert (row.workload, row.model, row.spec, row.metrics, row.source) == ("goat_bench", ref.model, ref.spec, ref.metrics, ref.source)
        assert row.reported is True and row.data == "reported" and row.status == "reported"
    assert reference_rows([]) == []


def test_unsharded_records_are_never_missing_shards_and_two_shards_need_both(tmp_path):
    write(tmp_path / "one" / "r", record())
    [row], _ = build_rows([tmp_path / "one"])
    assert row.shards == "" and row.status == "completed"
    write(tmp_path / "half" / "a", sharded(0), [sample(0, 1, 1)])
    [row], _ = build_rows([tmp_path / "half"])
    assert row.shards == "1/2" and row.status == "partial"


def test_a_part_without_timing_or_without_a_shard_joins_its_row(tmp_path):
    """Parts of one job may lack `timing` (killed before the end) or, run whole beside its shards, the
    shard entry: the row still forms, its time the longest part's."""
    write(tmp_path / "a", sharded(0, timing={"seconds": 4.0}), [sample(0, 1, 1)])
    untimed = sharded(1)
    del untimed["timing"]
    write(tmp_path / "b", untimed, [sample(1, 0, 0)])
    whole = record(metrics={})
    write(tmp_path / "c", whole, [sample(0, 1, 1), sample(1, 0, 0)])
    [row], problems = build_rows([tmp_path])
    assert problems == [] and len(row.records) == 3 and row.seconds == 4.0 and row.samples == 2


def test_samples_without_a_spec_to_score_them_are_a_problem_unless_the_job_has_just_started(tmp_path):
    failed = record(status="failed", error="", metrics={})
    del failed["spec"]
    folder = tmp_path / "failed" / "r"
    write(folder, failed, [sample(0, 1, 1)])
    [row], problems = build_rows([tmp_path / "failed"])
    why = "metrics not recomputed ('no record has a spec to re-score its samples with')"
    assert row.note == why and row.metrics == {} and problems == [f"{folder}: {why}"]
    started = record(status="partial", metrics={})
    del started["spec"]
    write(tmp_path / "started" / "r", started, [sample(0, 1, 1)])
    [row], problems = build_rows([tmp_path / "started"])
    assert problems == [] and row.metrics == {} and row.note == "" and row.samples == 1


def test_a_part_with_a_spec_and_no_samples_yet_has_no_metrics(tmp_path):
    write(tmp_path / "r", record(status="partial", metrics={}))
    [row], problems = build_rows([tmp_path])
    assert problems == [] and row.metrics == {} and row.samples == 0


def test_a_single_record_without_counts_has_no_samples_counted(tmp_path):
    rec = record()
    del rec["counts"]
    write(tmp_path / "r", rec)
    [row], problems = build_rows([tmp_path])
    assert problems == [] and row.samples == 0 and row.metrics == rec["metrics"]


def test_samples_without_a_status_count_as_answered(tmp_path):
    """An older samples file with no `status` field: its samples are answers (as merging ranks them)."""
    lines = [{"task": "sarcasm", "id": "0", "label": 1, "pred": 1}, {"task": "sarcasm", "id": "1", "label": 0, "pred": 1},
             sample(2, 1, None, "error")]
    write(tmp_path / "r", record(status="partial", metrics={}), lines)
    [row], _ = build_rows([tmp_path])
    assert row.note == "1 errored, metrics over 2 answered"


def test_records_are_found_under_every_folder_given(tmp_path):
    a = write(tmp_path / "one" / "a", record())
    b = write(tmp_path / "two" / "b", record())
    assert find_records([tmp_path / "one", tmp_path / "two"]) == [a, b]


@pytest.mark.parametrize("differing,more", [(4, ""), (5, " and 1 more")])
def test_a_config_note_counts_only_the_keys_past_four(tmp_path, differing, more):
    write(tmp_path / "a", record(config={f"k{i}": i for i in range(differing)}))
    write(tmp_path / "b", record(config={}))
    rows, _ = build_rows([tmp_path])
    note = next(r.note for r in rows if "k0=0" in r.note)
    assert note == "config differs: " + ", ".join(f"k{i}={i}" for i in range(4)) + more


def test_an_unreadable_sample_line_alone_is_a_problem(tmp_path):
    folder = tmp_path / "r"
    write(folder, record(status="partial", metrics={}), [sample(0, 1, 1)])
    with open(folder / "samples.jsonl", "a") as f:
        f.write("{not json\n")
    _, problems = build_rows([tmp_path])
    assert len(problems) == 1 and problems[0].startswith(f"{folder / 'samples.jsonl'}: 1 line(s) left out (line 2")


def test_an_answer_without_a_status_wins_over_an_error_for_its_key(tmp_path):
    write(tmp_path / "a", record(status="partial", metrics={}), [sample(0, 1, None, "error")])
    write(tmp_path / "b", record(metrics={}), [{"task": "sarcasm", "id": "0", "label": 1, "pred": 1}])
    [row], _ = build_rows([tmp_path])
    # The merge keeps the answer (the error is gone), and GOAT-Bench's rescore scores it as one: a line without
    # a status is an answer wherever it is read (mmsafety.record_models.answered).
    assert row.samples == 1 and row.metrics["per_task"]["sarcasm"]["errors"] == 0
    assert row.metrics["per_task"]["sarcasm"]["n"] == 1 and row.metrics["per_task"]["sarcasm"]["accuracy"] == 100.0


def test_alike_rows_are_found_whatever_the_order_of_their_spec_keys(tmp_path):
    """Two runs of one job (same spec, keys written in another order) that differ in config: both notes say
    how. Grouping by the spec's JSON as written would put them apart and leave both rows unexplained."""
    rec = record()
    write(tmp_path / "a", {**rec, "config": {"seed": 0}})
    write(tmp_path / "b", {**rec, "spec": dict(reversed(list(rec["spec"].items()))), "config": {"seed": 1}})
    rows, _ = build_rows([tmp_path])
    assert sorted(r.note for r in rows) == ["config differs: seed=0", "config differs: seed=1"]


def test_a_lone_row_before_two_alike_ones_leaves_their_notes(tmp_path):
    """Rows are grouped in the order their records are found: a row alike to none ("a") comes first."""
    write(tmp_path / "a", record(model={"name": "a-model"}))
    write(tmp_path / "b", record(config={"seed": 0}))
    write(tmp_path / "c", record(config={"seed": 1}))
    rows, _ = build_rows([tmp_path])
    assert {r.model: r.note for r in rows if r.model == "a-model"} == {"a-model": ""}
    assert sorted(r.note for r in rows if r.model == "m") == ["config differs: seed=0", "config differs: seed=1"]


def test_rows_of_one_model_are_ordered_by_their_spec_as_sorted_json(tmp_path):
    """Two rows of one model: the order is the specs' sorted JSON, not the order found nor keys as written.
    {"a": 1, "z": 2} sorts before {"b": 0}; written with "z" first it would sort after it."""
    write(tmp_path / "1", record(spec={"workload": "goat_bench", "b": 0}))
    write(tmp_path / "2", record(spec={"z": 2, "workload": "goat_bench", "a": 1}))
    rows, _ = build_rows([tmp_path])
    assert [r.records[0].parent.name for r in rows] == ["2", "1"]


def test_a_workload_without_a_sample_key_merges_every_sample_of_every_part(tmp_path, monkeypatch):
    """A plug-in whose samples have no key: nothing is de-duplicated, every sample of both parts is scored."""
    from mmsafety.workload import WORKLOADS
    from tests.toy_workload import CoinFlips

    class UnkeyedFlips(CoinFlips):
        sample_key = ()

    WORKLOADS.names()
    monkeypatch.setitem(WORKLOADS._items, "coin_flips", UnkeyedFlips())
    flips = lambda heads: [{"flip": "0", "status": "ok", "heads": h} for h in heads]
    base = {"schema_version": 1, "kind": "coin_flips", "status": "completed", "config": {}, "config_sha256": "x",
            "model": {"name": "dime"}, "timing": {"seconds": 1.0}}
    write(tmp_path / "a", {**base, "spec": {"shard": {"index": 0, "count": 2}}}, flips([1, 0]))
    write(tmp_path / "b", {**base, "spec": {"shard": {"index": 1, "count": 2}}}, flips([0, 0, 1]))
    [row], problems = build_rows([tmp_path])
    assert problems == [] and row.samples == 5
    assert row.metrics == {"flips": 5, "heads_rate": 2 / 5}



def test_goat_scores_a_sample_without_a_status_as_the_same_sample_with_status_ok():
    from goat_bench.evaluate import score_samples

    with_status = [sample(0, 1, 1), sample(1, 0, 1), sample(2, 1, 1), sample(3, 0, None, "error")]
    without = [{k: v for k, v in s.items() if k != "status"} if s["status"] == "ok" else s for s in with_status]
    assert score_samples(without, ["sarcasm"]) == score_samples(with_status, ["sarcasm"])
    assert score_samples(without, ["sarcasm"])["per_task"]["sarcasm"]["n"] == 3


def test_counts_that_leave_a_status_out_count_it_as_zero(tmp_path):
    write(tmp_path / "a", record(model={"name": "a"}, counts={"ok": 4}))
    write(tmp_path / "b", record(model={"name": "b"}, counts={"errors": 2}))
    rows, problems = build_rows([tmp_path])
    assert problems == [] and [(r.model, r.note) for r in rows] == [("a", ""), ("b", "2 errored, metrics over 0 answered")]


def test_a_record_without_seconds_yet_took_no_time(tmp_path):
    write(tmp_path / "r", record(status="partial", metrics={}, timing={"started": 1.0, "resumes": 0}))
    [row], _ = build_rows([tmp_path])
    assert row.seconds == 0


def test_errors_are_noted_after_a_note_already_there(tmp_path):
    failed = record(status="failed", error="", metrics={})
    del failed["spec"]
    write(tmp_path / "r", failed, [sample(0, 1, 1), sample(1, 0, None, "error")])
    [row], _ = build_rows([tmp_path])
    assert row.note == ("metrics not recomputed ('no record has a spec to re-score its samples with'); "
                        "1 errored, metrics over 1 answered")
