"""Leaderboards from real run records: shard merging from samples, statuses, escaping, sweeps."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mmsafety.leaderboard import write_leaderboard
from mmsafety.leaderboard.cli import main as leaderboard_main
from tests.helpers import cli_command

EVAL = cli_command("mmsafety-eval")
ATTACK = cli_command("mmsafety-attack")
HOSTILE = "<script>alert(1)</script> | x | ![img](http://evil) **bold**"
# Meme text is written to attack models and whoever reads it: every way out of an HTML context.
HOSTILE_MEME = ("</textarea></details></div><script>alert('meme')</script><img src=x onerror=alert(1)> "
                "\" onmouseover=\"alert(2) ' <!-- ]]> &amp; </pre></td></table>")


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



def test_merging_a_record_with_itself_or_shards_twice_in_any_order_equals_the_whole(eval_runs, tmp_path):
    """merge(r, r) = r, and repeated shards in any order count each meme once (#36 item 3)."""
    whole = json.loads((eval_runs / "whole" / "record.json").read_text())["metrics"]["per_task"]["sarcasm"]
    twice = tmp_path / "twice"
    for name in ("a", "b"):
        shutil.copytree(eval_runs / "whole", twice / name)
    # Shard 1 before shard 0 in path order, and shard 0 a second time.
    repeated = tmp_path / "repeated"
    for name, shard in (("a", 1), ("b", 0), ("c", 0)):
        shutil.copytree(eval_runs / "shards" / f"shard{shard}", repeated / name)
    for folder, members in ((twice, 2), (repeated, 3)):
        out = tmp_path / f"board-{folder.name}"
        write_leaderboard([folder], out)
        rows = table(out)["goat_bench"]
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["memes"] == 100 and f"merged from {members} records" in row["note"], row
        assert row["sarcasm_acc"] == round(whole["accuracy"], 2) and row["sarcasm_f1"] == round(whole["macro_f1"], 2)

def test_missing_shard_and_partial_or_failed_runs_are_shown(eval_runs, tmp_path):
    write_leaderboard([eval_runs / "shards" / "shard0"], tmp_path / "one")
    (row,) = table(tmp_path / "one")["goat_bench"]
    assert row["status"] == "partial (shards 1/2)" and row["shards"] == "1/2"
    # Every format says how many shards it has, as the README promises.
    assert "| partial \\(shards 1/2\\) |" in (tmp_path / "one" / "leaderboard.md").read_text()  # Markdown-escaped
    assert ">partial (shards 1/2)</td>" in (tmp_path / "one" / "leaderboard.html").read_text()
    (line,) = csv.DictReader(io.StringIO((tmp_path / "one" / "leaderboard.csv").read_text()))
    assert line["status"] == "partial (shards 1/2)"

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


def test_a_failed_run_shows_its_configured_model_and_error(eval_runs, tmp_path):
    """A job that failed before loading its model (no GPU for a 7B preset) has no model or spec in its
    record: the row names the model its config asked for and says why it failed, in every format."""
    shutil.copytree(eval_runs / "whole", tmp_path / "runs" / "gpu")
    record = json.loads((tmp_path / "runs" / "gpu" / "record.json").read_text())
    record["config"]["model"]["name"] = "llava-1.5-7b"
    error = "ConfigError: placement asks for CUDA but no CUDA device is visible; use placement=cpu"
    record.update(status="failed", model={}, spec={}, metrics={}, counts={}, error=error)
    (tmp_path / "runs" / "gpu" / "record.json").write_text(json.dumps(record))
    (tmp_path / "runs" / "gpu" / "samples.jsonl").write_text("")
    write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    (row,) = table(tmp_path / "out")["goat_bench"]
    assert row["model"] == "llava-1.5-7b" and row["status"] == "failed" and error in row["note"]
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| llava-1.5-7b |" in md and "no CUDA device is visible" in md
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert ">llava-1.5-7b</td>" in page and "no CUDA device is visible; use placement=cpu</td>" in page
    (line,) = csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text()))
    assert line["model"] == "llava-1.5-7b" and line["error"] == error


def test_with_paper_keeps_synthetic_rows_apart_unless_asked(eval_runs, tmp_path):
    """The organism's 100.0 on its own synthetic memes is a harness check: beside the paper's rows it
    would read as beating GPT-4V. Every format marks where each row's data came from, and the
    synthetic row gets a table of its own unless --compare-synthetic."""
    real = tmp_path / "runs" / "real"
    shutil.copytree(eval_runs / "whole", real)
    record = json.loads((real / "record.json").read_text())
    record["spec"].update(synthetic=False, root="/data/goat")
    record["model"]["name"] = "organism-on-real-data"
    (real / "record.json").write_text(json.dumps(record))
    shutil.copytree(eval_runs / "whole", tmp_path / "runs" / "synthetic")
    assert leaderboard_main([str(tmp_path / "runs"), "--out", str(tmp_path / "apart"), "--with-paper"]) == 0
    tables = table(tmp_path / "apart")
    compared = {r["model"]: r for r in tables["goat_bench"]}
    assert compared["GPT-4V"]["status"] == "reported" and compared["GPT-4V"]["overall_acc"] == 72.17
    assert compared["GPT-4V"]["data"] == "reported" and compared["organism-on-real-data"]["data"] == "real"
    assert "organism" not in compared
    (synthetic,) = tables["goat_bench_synthetic"]
    assert synthetic["model"] == "organism" and synthetic["data"] == "synthetic" and synthetic["status"] == "completed"

    md = (tmp_path / "apart" / "leaderboard.md").read_text()
    first, second = md.split("## GOAT-Bench (accuracy / macro-F1, %): synthetic data", 1)
    assert "| GPT-4V | reported |" in first and "| organism | synthetic |" not in first
    assert "| organism | synthetic |" in second and "GPT-4V" not in second
    page = (tmp_path / "apart" / "leaderboard.html").read_text()
    first, second = page.split("<h2>GOAT-Bench (accuracy / macro-F1, %): synthetic data</h2>", 1)
    assert ">GPT-4V</td>" in first and ">organism</td>" not in first and ">organism</td>" in second
    assert 'class="c-data d-synthetic">synthetic</td>' in second
    lines = list(csv.DictReader(io.StringIO((tmp_path / "apart" / "leaderboard.csv").read_text())))
    assert {(r["table"], r["model"], r["data"]) for r in lines if r["model"] in ("organism", "GPT-4V")} == {
        ("goat_bench_synthetic", "organism", "synthetic"), ("goat_bench", "GPT-4V", "reported")}

    assert leaderboard_main([str(tmp_path / "runs"), "--out", str(tmp_path / "together"), "--with-paper",
                             "--compare-synthetic"]) == 0
    together = table(tmp_path / "together")
    assert {"organism", "GPT-4V"} <= {r["model"] for r in together["goat_bench"]}
    assert "goat_bench_synthetic" not in together


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
    line = next(row for row in md.splitlines() if "alert" in row and row.startswith("|"))  # the table's row
    header = next(row for row in md.splitlines() if row.startswith("| model"))
    unescaped_pipes = lambda s: s.replace("\\|", "").count("|")
    assert unescaped_pipes(line) == unescaped_pipes(header)  # the caption's pipes do not add columns
    assert "<script>" not in md and "![img]" not in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert rows[0]["model"] == HOSTILE  # CSV keeps the text, quoted


class _Structure(HTMLParser):
    """The elements and text a browser would build from a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.ends: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        self.ends.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def structure(page: str) -> _Structure:
    parsed = _Structure()
    parsed.feed(page)
    return parsed


def hostile_meme_run(eval_runs: Path, folder: Path) -> Path:
    """The organism's run, its memes' captions replaced by HOSTILE_MEME (in a copy of the dataset)."""
    shutil.copytree(eval_runs / "whole", folder / "run")
    record = json.loads((folder / "run" / "record.json").read_text())
    source = Path(record["spec"]["root"])
    shutil.copytree(source / "sarcasm", folder / "data" / "sarcasm")
    jsonl = folder / "data" / "sarcasm" / "test.jsonl"
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    jsonl.write_text("".join(json.dumps({**line, "text": HOSTILE_MEME}) + "\n" for line in lines))
    record["spec"]["root"] = str(folder / "data")
    (folder / "run" / "record.json").write_text(json.dumps(record))
    return folder / "run"


def test_the_sample_browser_escapes_hostile_meme_text(eval_runs, tmp_path):
    """Each row's memes show with image, caption, answer and verdict; the caption stays text."""
    run_dir = hostile_meme_run(eval_runs, tmp_path)
    write_leaderboard([run_dir], tmp_path / "out")
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    parsed = structure(page)
    assert [t for t, _ in parsed.tags].count("script") == 1  # the page's own
    assert not any("onerror" in attrs or "onmouseover" in attrs for _, attrs in parsed.tags)
    assert [t for t, _ in parsed.tags].count("details") == parsed.ends.count("details") == 1
    assert "textarea" not in [t for t, _ in parsed.tags] and "pre" not in parsed.ends
    assert sum(HOSTILE_MEME in text for text in parsed.text) == 24  # the first 24 memes, as text
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    first = samples[0]
    assert f"{first['task']} / {first['id']}" in page
    verdict = ("correct" if first["correct"] else "wrong") + f" (label {first['label']})"
    assert verdict in page.split(f"{first['task']} / {first['id']}", 1)[1][:200]
    memes = [attrs for tag, attrs in parsed.tags if tag == "img" and attrs.get("alt") == "meme"]
    assert len(memes) == 24 and all(a["src"].startswith("data:image/png;base64,") for a in memes)


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
    assert page.count('<table class="sortable">') == 2 and 'alt="asr_vs_eps"' in page and 'alt="adversarial_png"' in page
    assert (out / "asr_vs_eps.png").stat().st_size > 5000
    # Attack rows sit under one heading per case, target and success measure.
    assert page.count('<tr class="group">') == 1 and ">case tool_call · target send_email · success_measure syntax</th>" in page


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return browser


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]


def rendered(page: Path, fragment: str = "", width: int = 1300) -> tuple[str, dict]:
    """The DOM Chromium builds from the page in a `width`-px window, and the body's data attributes."""
    proc = subprocess.run([chromium(), *BROWSER_FLAGS, f"--window-size={width},900", "--dump-dom", page.as_uri() + fragment],
                          capture_output=True, text=True, timeout=180)
    body = next((attrs for tag, attrs in structure(proc.stdout).tags if tag == "body"), {})
    assert "data-tables" in body, proc.stderr[-2000:]
    return proc.stdout, body


def test_page_renders_in_headless_chromium(sweep_page):
    _, out = sweep_page
    _, body = rendered(out / "leaderboard.html")
    assert body["data-tables"] == "2"
    images, decoded = int(body["data-images"]), int(body["data-images-decoded"])
    assert images >= 3 + 6 and decoded == images  # three plots + clean/adversarial thumbnails, all decoded


@pytest.fixture(scope="module")
def crowded_page(eval_runs, tmp_path_factory, organism):
    """Everything that widens a page: attack rows with thumbnails (one bounded, one unconstrained), the
    paper's rows with the synthetic ones, hostile memes with every sample list open, a 300-character
    model name without a space, a long error."""
    root = tmp_path_factory.mktemp("crowded")
    run(ATTACK, "model=organism", "attack.eps=16/255", "attack.steps=3", "images=2", "heldout_prompts=2",
        f"hydra.run.dir={root / 'attack'}")
    shutil.copytree(root / "attack", root / "unconstrained")
    record = json.loads((root / "unconstrained" / "record.json").read_text())
    record["spec"].update(norm="none", eps=1.0, attack="pgd_unconstrained")
    record["model"]["name"] = "y" * 300
    (root / "unconstrained" / "record.json").write_text(json.dumps(record))
    hostile_meme_run(eval_runs, root / "memes")
    shutil.copytree(eval_runs / "whole", root / "long")
    record = json.loads((root / "long" / "record.json").read_text())
    record["model"]["name"] = "x" * 300 + HOSTILE
    record.update(status="failed", error="RuntimeError: " + "a-very-long-unbroken-token" * 20 + " " + HOSTILE_MEME)
    (root / "long" / "record.json").write_text(json.dumps(record))
    out = root / "board"
    write_leaderboard([root / "attack", root / "unconstrained", root / "memes", root / "long"], out,
                      with_paper=True, compare_synthetic=True)
    page = (out / "leaderboard.html").read_text()
    assert ">unconstrained</td>" in page and page.count('alt="adversarial_png"') >= 2 + 2  # table and browser
    return out / "leaderboard.html"


def test_nothing_overflows_a_1300px_window(crowded_page):
    """The browser's own layout: no element reaches past the right edge of a 1300-px window, with every
    sample list open; and the screenshot's right margin is blank from top to bottom."""
    from PIL import Image

    _, body = rendered(crowded_page, "#open-all")
    assert body["data-overflowing"] == "0", body["data-overflow"]
    assert int(body["data-scroll-width"]) <= int(body["data-viewport"]) == 1300
    shot = crowded_page.parent / "shot.png"
    proc = subprocess.run([chromium(), *BROWSER_FLAGS, "--window-size=1300,5000", f"--screenshot={shot}",
                           crowded_page.as_uri() + "#open-all"], capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1300, 5000)
    margin = image.crop((1300 - 16, 0, 1300, 5000))
    assert margin.getextrema() == ((255, 255), (255, 255), (255, 255))  # nothing drawn into the right margin
    assert image.crop((0, 0, 1300 - 16, 5000)).getextrema() != ((255, 255),) * 3  # the page itself did draw


def test_columns_sort_in_the_browser(eval_runs, tmp_path):
    """`#sort=misogyny` clicks that header: rows by the misogyny cell's accuracy, highest first, empty cells last."""
    write_leaderboard([eval_runs / "whole"], tmp_path, with_paper=True, compare_synthetic=True)
    page = (tmp_path / "leaderboard.html").read_text()

    def models(dom: str) -> list[str]:
        goat = dom.split("<table", 2)[1]
        return [cell.split(">", 1)[1].split("<", 1)[0] for cell in goat.split('<td class="c-model"')[1:]]

    assert models(page) == ["organism", "GPT-4V", "LLaVA-1.5 13B", "Qwen-VL 10B", "InstructBLIP 13B"]
    dom, _ = rendered(tmp_path / "leaderboard.html", "#sort=misogyny")
    # The organism ran sarcasm only: its empty misogyny cell sorts last.
    assert models(dom) == ["GPT-4V", "Qwen-VL 10B", "InstructBLIP 13B", "LLaVA-1.5 13B", "organism"]
    assert 'data-column="misogyny" aria-sort="descending"' in dom


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

    from mmsafety.leaderboard.sample_browser import thumbnail as _thumbnail

    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    assert _thumbnail(good).startswith("data:image/png;base64,")
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(good.read_bytes()[:60])  # cut inside the image data
    assert _thumbnail(damaged) is None
    assert _thumbnail(tmp_path / "missing.png") is None
