"""Leaderboards from real run records: shard merging from samples, statuses, escaping, sweeps."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmsafety.leaderboard import write_leaderboard
from mmsafety.leaderboard.cli import main as leaderboard_main
from tests.helpers import cli_command

EVAL = cli_command("mmsafety-eval")
ATTACK = cli_command("mmsafety-attack")
HOSTILE = "<script>alert(1)</script> | x | ![img](http://evil) **bold**"


def run(cmd: list[str], *overrides: str) -> None:
    proc = subprocess.run([*cmd, *overrides], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory, organism):
    """The organism on 100 synthetic sarcasm memes: whole, and split into two shards."""
    root = tmp_path_factory.mktemp("lb")
    common = ["task=goat_sarcasm", "model=organism"]
    run(EVAL, *common, f"hydra.run.dir={root / 'whole'}")
    for i in (0, 1):
        run(EVAL, *common, f"shard={i}", "num_shards=2", f"hydra.run.dir={root / 'shards' / f'shard{i}'}")
    return root


def table(out: Path) -> dict:
    return json.loads((out / "leaderboard.json").read_text())


def test_shards_merge_into_the_unsharded_row(eval_runs, tmp_path):
    whole = json.loads((eval_runs / "whole" / "record.json").read_text())["metrics"]["per_task"]["sarcasm"]
    sizes = [json.loads((eval_runs / "shards" / f"shard{i}" / "record.json").read_text())["counts"]["ok"] for i in (0, 1)]
    assert sum(sizes) == 100 and min(sizes) > 20  # a real split, not all in one shard
    write_leaderboard([eval_runs / "shards"], tmp_path)
    rows = table(tmp_path)["goat_bench"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["status"] == "completed" and row["memes"] == 100 and "merged from 2 records" in row["note"]
    # Computed from the merged samples, not averaged from the two shards' metrics.
    assert row["sarcasm_acc"] == round(whole["accuracy"], 2) and row["sarcasm_f1"] == round(whole["macro_f1"], 2)


def test_missing_shard_and_partial_or_failed_runs_are_shown(eval_runs, tmp_path):
    write_leaderboard([eval_runs / "shards" / "shard0"], tmp_path / "one")
    (row,) = table(tmp_path / "one")["goat_bench"]
    assert row["status"] == "partial" and row["shards"] == "1/2"

    copy = tmp_path / "runs"
    for name, status in (("a", "failed"), ("b", "partial")):
        shutil.copytree(eval_runs / "whole", copy / name)
        record = json.loads((copy / name / "record.json").read_text())
        record.update(status=status, metrics={})
        record["model"]["name"] = f"model-{name}"
        (copy / name / "record.json").write_text(json.dumps(record))
    (copy / "c").mkdir()
    (copy / "c" / "record.json").write_text('{"kind": "goat_bench", "status": "comp')  # torn by hand
    summary = write_leaderboard([copy], tmp_path / "out")
    rows = {r["model"]: r for r in table(tmp_path / "out")["goat_bench"]}
    assert rows["model-a"]["status"] == "failed" and rows["model-b"]["status"] == "partial"
    assert rows["model-b"]["memes"] == 100  # a partial row still shows what its samples say
    assert len(summary["problems"]) == 1 and "unreadable" in summary["problems"][0]


def test_a_job_that_has_just_started_is_partial_not_a_problem(eval_runs, tmp_path):
    """A job's samples are flushed one by one, its record every 2 s: a reader can find samples under
    a record that has no spec yet. The row shows as partial, and nothing is
    reported as a problem (the leaderboard rebuilt during a sweep read exactly this)."""
    shutil.copytree(eval_runs / "whole", tmp_path / "runs" / "a")
    record = json.loads((tmp_path / "runs" / "a" / "record.json").read_text())
    record.update(status="partial", metrics={}, counts={})
    del record["spec"]
    (tmp_path / "runs" / "a" / "record.json").write_text(json.dumps(record))
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    assert summary["problems"] == []
    (row,) = table(tmp_path / "out")["goat_bench"]
    assert row["status"] == "partial"
    # Finished, a record with no spec to re-score its samples by is a problem.
    record["status"] = "completed"
    (tmp_path / "runs" / "a" / "record.json").write_text(json.dumps(record))
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "out2")
    assert len(summary["problems"]) == 1 and "no record has a spec to re-score" in summary["problems"][0]


def test_with_paper_adds_reported_rows(eval_runs, tmp_path):
    write_leaderboard([eval_runs / "whole"], tmp_path, with_paper=True)
    rows = {r["model"]: r for r in table(tmp_path)["goat_bench"]}
    assert rows["GPT-4V"]["status"] == "reported" and rows["GPT-4V"]["overall_acc"] == 72.17
    assert rows["organism"]["status"] == "completed"


def test_data_text_is_escaped_in_every_format(eval_runs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(eval_runs / "whole", copy)
    record = json.loads((copy / "record.json").read_text())
    record["model"]["name"] = HOSTILE
    (copy / "record.json").write_text(json.dumps(record))
    write_leaderboard([copy], tmp_path / "out")
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own render check, allowed by hash in its CSP
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    line = next(row for row in md.splitlines() if "alert" in row)
    header = next(row for row in md.splitlines() if row.startswith("| model"))
    unescaped_pipes = lambda s: s.replace("\\|", "").count("|")
    assert unescaped_pipes(line) == unescaped_pipes(header)  # the caption's pipes do not add columns
    assert "<script>" not in md and "![img]" not in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert rows[0]["model"] == HOSTILE  # CSV keeps the text, quoted


def test_cli_reports_empty_and_missing_inputs(tmp_path, capsys):
    assert leaderboard_main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty").mkdir()
    assert leaderboard_main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no run records" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory, organism, tiny_llava, eval_runs):
    """As a new user from the README: an eps sweep over two models, then one leaderboard of it all."""
    sweep = tmp_path_factory.mktemp("sweep") / "attack"
    run(ATTACK, "-m", "model=organism,tiny_llava", "attack.eps=8/255,16/255,32/255", "attack.steps=15",
        "images=2", "heldout_prompts=4", f"hydra.sweep.dir={sweep}")
    out = sweep.parent / "board"
    write_leaderboard([sweep, eval_runs / "whole"], out)
    return sweep, out


def test_sweep_writes_its_own_leaderboard_and_the_page_has_both_tables(sweep_page):
    sweep, out = sweep_page
    own = table(sweep)  # written by the on_multirun_end callback
    assert len(own["attacks"]) == 6 and {r["eps"] for r in own["attacks"]} == {"8/255", "16/255", "32/255"}
    page = (out / "leaderboard.html").read_text()
    assert page.count("<table>") == 2 and 'alt="asr_vs_eps"' in page and 'alt="adversarial_png"' in page
    assert (out / "asr_vs_eps.png").stat().st_size > 5000


def test_page_renders_in_headless_chromium(sweep_page):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    _, out = sweep_page
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", (out / "leaderboard.html").as_uri()], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'data-tables="2"' in dom, proc.stderr[-2000:]
    images = int(dom.split('data-images="')[1].split('"')[0])
    decoded = int(dom.split('data-images-decoded="')[1].split('"')[0])
    assert images >= 3 + 6 and decoded == images  # three plots + clean/adversarial thumbnails, all decoded


@pytest.mark.slow
def test_submitit_local_sweep_aggregates(tmp_path, organism, tiny_llava):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run(EVAL, "-m", "hydra/launcher=submitit_local", "model=organism,tiny_llava", "task=goat_sarcasm",
        "task.limit=6", f"hydra.sweep.dir={tmp_path}")
    rows = {r["model"]: r for r in table(tmp_path)["goat_bench"]}
    assert set(rows) == {"organism", "tiny_llava"} and all(r["memes"] == 6 for r in rows.values())
    assert rows["organism"]["sarcasm_acc"] == 100.0


def test_a_record_cannot_make_the_leaderboard_call_other_functions(eval_runs, tmp_path):
    """A record selects its workload by registered key only: a dotted name (an old record's
    spec.rescore, or a kind naming a module) is never imported or called."""
    for name, kind, rescore in (("run", "goat_bench", "mmsafety.records:atomic_write_text"),
                                ("twin", "goat_bench", "mmsafety.records:atomic_write_text"),
                                ("evil", "mmsafety.records:atomic_write_text", None)):
        shutil.copytree(eval_runs / "whole", tmp_path / "runs" / name)
        record = json.loads((tmp_path / "runs" / name / "record.json").read_text())
        record["kind"] = kind
        record["spec"]["rescore"] = rescore
        (tmp_path / "runs" / name / "record.json").write_text(json.dumps(record))
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    assert [p for p in summary["problems"] if "is not installed" in p] == [
        p for p in summary["problems"] if "evil" in p] and len(summary["problems"]) == 1
    (row,) = table(tmp_path / "out")["goat_bench"]
    whole = json.loads((eval_runs / "whole" / "record.json").read_text())["metrics"]["per_task"]["sarcasm"]
    assert row["sarcasm_acc"] == round(whole["accuracy"], 2)  # re-scored by the registered workload, not the record's name


def test_thumbnail_of_a_damaged_or_missing_image_is_left_out(tmp_path):
    from PIL import Image

    from mmsafety.leaderboard.export import _thumbnail

    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    assert _thumbnail(good).startswith("data:image/png;base64,")
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(good.read_bytes()[:60])  # cut inside the image data
    assert _thumbnail(damaged) is None
    assert _thumbnail(tmp_path / "missing.png") is None
