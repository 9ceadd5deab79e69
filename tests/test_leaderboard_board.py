"""A larger board from synthetic records (no model runs): a dozen rows across the three workloads
(GOAT-Bench, visual attacks, HarmBench), each number known in advance. Numbers read in one format
(percent, one decimal, the interval after it) in the console, the Markdown and the page; the page
opens with what was run and the headline numbers, every section says what its numbers mean; and in
headless Chromium at 1300 and 1920 px nothing scrolls sideways, every column has a header and
every legend is inside its image."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mmsafety.leaderboard import write_leaderboard
from tests.test_leaderboard import chromium, rendered, structure

TASKS = ["hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"]
GOAT_MODELS = ["llava-hf/llava-1.5-13b-hf", "Qwen/Qwen2-VL-7B-Instruct", "OpenGVLab/InternVL2-8B",
               "HuggingFaceM4/idefics2-8b-with-a-rather-long-checkpoint-name"]
ATTACK_MODELS = ["llava-hf/llava-1.5-7b-hf", "Qwen/Qwen2-VL-2B-Instruct"]
HARMBENCH_MODELS = ["llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-mistral-7b-hf"]
CLS = {"name": "harmbench_cls", "model": {"name_or_path": "cais/HarmBench-Llama-2-13b-cls"}}


def write_record(folder: Path, record: dict, samples: list[dict] = ()) -> None:
    folder.mkdir(parents=True)
    base = {"schema_version": 1, "run_id": folder.name, "status": "completed", "config": {"run": folder.name},
            "counts": {"ok": len(samples), "skipped": 0, "errors": 0}, "timing": {"seconds": 12.5}}
    (folder / "record.json").write_text(json.dumps({**base, **record}))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def goat_record(model: str, i: int) -> dict:
    """Accuracy 200/3 + i % (66.666...), macro-F1 50 + i/8 %, with intervals: all in percent, as GOAT records keep them."""
    per_task = {t: {"n": 30, "skipped": 0, "accuracy": 200 / 3 + i, "macro_f1": 50 + i / 8, "invalid_rate": 0.0,
                    "ci95": {"accuracy": [50 + i + 1 / 3, 80 + i + 1 / 7], "macro_f1": [40.04, 60.06]}} for t in TASKS}
    overall = {"n": 150, "skipped": 0, "accuracy": 200 / 3 + i, "macro_f1": 50 + i / 8, "invalid_rate": 0.0}
    return {"kind": "goat_bench", "model": {"name": model},
            "spec": {"tasks": TASKS, "synthetic": False, "root": None, "scoring": "logprob", "prompt": {"name": "paper"}},
            "metrics": {"per_task": per_task, "overall": overall}}


def attack_record(model: str, eps: int, asr: float) -> dict:
    """An attack at eps/255 whose success is `asr` (a fraction, as attack records keep rates)."""
    return {"kind": "visual_attack", "model": {"name": model},
            "spec": {"case": "tool_call", "target": "send_email", "attack": "tool_call", "objective": "tool_misuse",
                     "norm": "linf", "eps": eps / 255, "step_size": eps / 255 / 8, "steps": 500, "images": 16,
                     "headline": "syntax"},
            "metrics": {"images": 16, "asr": {"syntax": asr, "argument": asr / 2}, "clean_baseline": {"syntax": 0.0},
                        "stealth": {"ssim": 0.91234, "psnr": 35.678}, "attack_seconds": 321.0}}


def harmbench_record(model: str, method: str, harmful: list[int]) -> tuple[dict, list[dict]]:
    """A HarmBench run over len(harmful) behaviours, one test case each, labelled by the judge as given."""
    samples = [{"status": "ok", "image": i, "clean_png": f"clean_{i}.png", "adversarial_png": f"adv_{i}.png",
                "steps_run": 0, "attack_seconds": 1.0, "stealth": {}, "clean": {"harmful": 0.0},
                "adversarial": {"harmful": float(label)},
                "base": {"behavior_id": f"b{i}", "semantic_category": ["illegal", "harassment"][i % 2]},
                "outputs": {"adversarial": [{"label": label, "generation": "..."}], "clean": [{"label": 0}]}}
               for i, label in enumerate(harmful)]
    record = {"kind": "visual_attack", "model": {"name": model},
              "spec": {"case": "harmbench_behaviors", "method": method, "attack": method,
                       "harmbench_method": {"direct_request": "DirectRequest", "harmbench_pgd": "MultiModalPGD"}[method],
                       "steps": 0 if method == "direct_request" else 500, "judge": CLS, "synthetic": True,
                       "max_new_tokens": 64, "headline": "harmful"},
              "metrics": {"images": len(harmful), "asr": {"harmful": sum(harmful) / len(harmful)},
                          "clean_baseline": {"harmful": 0.0}, "stealth": {}, "attack_seconds": 1.0}}
    return record, samples


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """Twelve rows: four GOAT-Bench models, four attacks (two models x two budgets), four HarmBench
    runs (two models x DirectRequest / PGD), and the papers' GOAT rows beside them."""
    root = tmp_path_factory.mktemp("board")
    runs = root / "runs"
    for i, model in enumerate(GOAT_MODELS):
        write_record(runs / f"goat{i}", goat_record(model, i))
    for i, model in enumerate(ATTACK_MODELS):
        for eps, asr in ((8, 13 / 16), (16, 15 / 16)):
            write_record(runs / f"attack{i}-{eps}", attack_record(model, eps, asr - i / 16))
    for i, model in enumerate(HARMBENCH_MODELS):
        for method, labels in (("direct_request", [0, 0, 1, 0, 0, 0]), ("harmbench_pgd", [1, 1, 0, 1 - i, 0, 0])):
            record, samples = harmbench_record(model, method, labels)
            write_record(runs / f"harmbench{i}-{method}", record, samples)
    summary = write_leaderboard([runs], root / "out", with_paper=True)
    assert summary["rows"]["goat_bench"] == 4 + 4 and summary["rows"]["attacks"] == 4 and summary["rows"]["harmbench"] == 4
    assert not summary["problems"], summary["problems"]
    return root / "out"


# Columns whose cells are percentages, per table, and how a cell of each reads.
ONE_DECIMAL = r"-?\d+\.\d"
PERCENT_COLUMNS = {
    "goat_bench": {c: rf"{ONE_DECIMAL} / {ONE_DECIMAL}" for c in ["overall", *TASKS]},
    "attacks": {c: ONE_DECIMAL for c in ("asr", "asr_argument", "clean_baseline")},
    "harmbench": {"asr": ONE_DECIMAL, "direct_request_asr": ONE_DECIMAL, "start_image_asr": ONE_DECIMAL,
                  "asr_ci95": rf"\[{ONE_DECIMAL}, {ONE_DECIMAL}\]"},
}


def markdown_tables(md: str) -> dict[str, list[dict]]:
    """The Markdown's tables by section title: one dict per row, header -> cell text."""
    out: dict[str, list[dict]] = {}
    title = None
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            title = line[3:]
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---") and title:
            header = [c.strip() for c in line.strip("|").split(" | ")]
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", row.strip()[1:-1])]
                out.setdefault(title, []).append(dict(zip(header, cells)))
    return out


def test_markdown_reads_percent_with_one_decimal_and_the_interval(board):
    """Every percent cell of the Markdown has one decimal; the values are the records' fractions x 100
    (GOAT's percents) rounded once: 200/3 -> 66.7, 13/16 -> 81.2, HarmBench 3 of 6 behaviours -> 50.0; the
    GOAT intervals are listed under their table (Markdown has no hover)."""
    md = (board / "leaderboard.md").read_text()
    tables = markdown_tables(md)
    by_key = {"goat_bench": "GOAT-Bench", "attacks": "Visual attacks", "harmbench": "HarmBench"}
    for key, columns in PERCENT_COLUMNS.items():
        (title,) = [t for t in tables if t.startswith(by_key[key]) and "synthetic" not in t]
        rows = tables[title]
        assert rows, title
        for row in rows:
            for column, pattern in columns.items():
                cell = row[column]
                assert cell == "" or re.fullmatch(pattern, cell), (title, column, cell)
    goat = {r["model"]: r for r in tables[next(t for t in tables if t.startswith("GOAT"))]}
    assert goat["Qwen/Qwen2-VL-7B-Instruct"]["sarcasm"] == "67.7 / 50.1"  # 200/3 + 1, 50 + 1/8
    assert goat["GPT-4V"]["overall"] == "72.2 / 70.3"  # the paper's 72.17 / 70.29, one decimal
    attacks = tables[next(t for t in tables if t.startswith("Visual attacks"))]
    assert sorted(r["asr"] for r in attacks) == ["75.0", "81.2", "87.5", "93.8"]  # 12/16, 13/16, 14/16, 15/16
    harm = {(r["model"], r["method"]): r for r in tables[next(t for t in tables if t.startswith("HarmBench"))]}
    assert harm[("llava-hf/llava-1.5-7b-hf", "MultiModalPGD")]["asr"] == "50.0"
    assert harm[("llava-hf/llava-v1.6-mistral-7b-hf", "MultiModalPGD")]["asr"] == "33.3"  # 2 of 6
    assert harm[("llava-hf/llava-v1.6-mistral-7b-hf", "MultiModalPGD")]["direct_request_asr"] == "16.7"
    # The intervals the page shows on hover are written under the GOAT table, one decimal.
    assert "sarcasm: 95% bootstrap interval: accuracy \\[51.3, 81.1\\], macro-F1 \\[40.0, 60.1\\]" in md
    assert not re.search(r"\b\d+\.\d{2,}\b", md.split("## Problems")[0].replace("\\.", ".")
                         .split("## GOAT-Bench")[1].split("## Visual attacks")[0])  # no 66.67, 0.8125 in GOAT's part


def page_text_cells(page: str) -> dict[str, list[str]]:
    """Text of every table cell on the page by its column class (c-asr, c-overall, ...)."""
    cells: dict[str, list[str]] = {}
    for match in re.finditer(r'<td class="c-([a-z0-9_]+)[^"]*"[^>]*>([^<]*)</td>', page):
        cells.setdefault(match.group(1), []).append(match.group(2))
    return cells


def test_page_reads_percent_with_one_decimal(board):
    page = (board / "leaderboard.html").read_text()
    cells = page_text_cells(page)
    for columns in PERCENT_COLUMNS.values():
        for column, pattern in columns.items():
            assert cells.get(column), column
            assert all(c == "" or re.fullmatch(pattern, c) for c in cells[column]), (column, cells[column])
    assert "66.7 / 50.0" in cells["overall"] and "81.2" in cells["asr"]
    assert "0.8125" not in page and "66.67" not in page and "81.25" not in page


def test_the_top_says_what_ran_and_the_headline_numbers_before_the_tables(board):
    page = (board / "leaderboard.html").read_text()
    top, tables = page.split("</section>", 1)
    assert '<section class="overview">' in top and '<table' not in top  # before every table
    ran = top.split('<ul class="ran">', 1)[1].split("</ul>", 1)[0]
    assert "12 runs of 7 models" in ran  # GOAT 4, attacks 2, HarmBench 2 (one model in both attack tables counted once)
    assert "real (4)" in ran and "synthetic (8)" in ran and "completed (12)" in ran
    assert "rows as the papers report them" in ran
    heads = re.findall(r"<li>([^<]*)</li>", top.split('<ul class="headlines">', 1)[1].split("</ul>", 1)[0])
    assert len(heads) == 3
    # The highest measured value of each headline column, with the row it comes from.
    assert heads[0].startswith("GOAT-Bench") and "highest overall 69.7 / 50.4" in heads[0] and GOAT_MODELS[3] in heads[0]
    assert "highest asr 93.8 (llava-hf/llava-1.5-7b-hf, case tool_call, target send_email" in heads[1].replace("&#x27;", "'")
    harm = heads[2]
    assert "highest asr 50.0 [" in harm and "llava-hf/llava-1.5-7b-hf" in harm and "of 4 measured rows" in harm
    # Each section: one sentence under its title saying what the numbers mean and what higher means.
    sections = re.findall(r'<h2>([^<]*)</h2>\s*<p class="about">([^<]*)</p>', tables)
    titles = re.findall(r"<h2>([^<]*)</h2>", tables)
    assert [t for t, _ in sections] == [t for t in titles if t not in ("Samples", "Problems")] and len(sections) == 3
    for _, about in sections:
        assert about.count(". ") == 0 and about.endswith(".") and "higher means" in about
    md = (board / "leaderboard.md").read_text()
    assert md.index("## What was run") < md.index("## Headline numbers") < md.index("## GOAT-Bench")


@pytest.mark.parametrize("width", [1300, 1920])
def test_the_larger_board_fits_the_window(board, width):
    """In headless Chromium: no sideways scroll, no element past the right edge, every table column
    with a header, every image decoded; and every plot's legend inside its image (the PNG's border is
    blank: a clipped legend would be cut at the edge)."""
    chromium()
    _, body = rendered(board / "leaderboard.html", "#open-all", width=width)
    assert int(body["data-scroll-width"]) <= int(body["data-inner-width"]) == width
    assert body["data-overflowing"] == "0", body["data-overflow"]
    assert body["data-headerless"] == "0", body["data-headerless-tables"]
    assert int(body["data-tables"]) == 3 and body["data-images"] == body["data-images-decoded"]
    plots = sorted(board.glob("*.png"))
    assert {p.stem for p in plots} >= {"asr_vs_eps", "f1_per_task"}
    for plot in plots:
        image = Image.open(plot).convert("L")
        w, h = image.size
        for box in ((0, 0, w, 3), (0, h - 3, w, h), (0, 0, 3, h), (w - 3, 0, w, h)):
            assert image.crop(box).getextrema() == (255, 255), (plot.name, box)


def test_console_summaries_read_percent_with_one_decimal():
    """What a job prints when it ends: GOAT's table, an attack's and a transfer judge's, in percent with
    one decimal (GOAT with its intervals); no raw fraction."""
    from goat_bench.workload import GoatBench
    from visual_attacks.transfer import TransferJudge
    from visual_attacks.workload import VisualAttack

    goat = goat_record("m", 0)["metrics"]
    text = GoatBench().summary(goat)
    assert "66.7/50.0" in text.replace(" ", "") and "66.67" not in text
    assert "[50.3, 80.1]" in text and "[40.0, 60.1]" in text
    metrics = attack_record("m", 8, 13 / 16)["metrics"]
    for workload in (VisualAttack(), TransferJudge()):
        text = workload.summary(metrics)
        assert "81.2 %" in text and "40.6 %" in text and "0.8125" not in text and "0.40625" not in text, text
    from harmbench.agreement import table as agreement_table  # mmsafety-judge-agreement's table

    judge = {"n": 16, "agreement": 13 / 16, "kappa": 0.6, "fpr": 1 / 16, "fnr": 2 / 16, "unparsed": 0}
    text = agreement_table({"judges": {"refusal_substring": judge}, "reference": {}})
    assert "| refusal_substring | 16 | 81.2 | 0.600 | 6.2 | 12.5 | 0 |" in text and "0.812" not in text


def test_harmbench_judge_prints_asr_in_percent_with_its_interval(tmp_path):
    """`mmsafety-harmbench-judge completions=...`: 1 of 3 behaviours -> `ASR 33.3 % [0.0, 100.0]`, not 0.333."""
    from harmbench.data import read_behaviors
    from harmbench.synthetic import synthetic_root
    from tests.test_cli_messages import harmbench_command

    behaviours = [b.id for b in read_behaviors(synthetic_root()) if b.skip_reason is None][:3]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps({"behavior_id": b, "generation": g}) + "\n"
                            for b, g in zip(behaviours, ("Sure, here it is", "I'm sorry", "I cannot help"))))
    proc = harmbench_command("mmsafety-harmbench-judge", "judge=refusal_substring", f"completions={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "judged-refusal_substring" / "asr.json").read_text())
    assert report["asr"] == pytest.approx(1 / 3)  # the record keeps the fraction
    low, high = (f"{100 * v:.1f}" for v in report["ci95"])
    assert f"ASR 33.3 % [{low}, {high}] over 3 behaviours" in proc.stdout
    assert "0.333" not in proc.stdout


def test_the_record_schema_says_which_rates_are_fractions_and_which_percent():
    """Records keep unrounded values under their stored names; the published schema's `metrics`
    description names the unit of each rate, and the workloads' own metric functions agree with it:
    GOAT-Bench's accuracy of 3 right of 4 is 75.0 (percent), an attack's success on 1 of 2 images 0.5."""
    from goat_bench.metrics import task_metrics
    from visual_attacks.summary import summarize

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "record.schema.json").read_text())
    description = schema["properties"]["metrics"].get("description", "")
    fractions, percent = description.split("are fractions 0-1", 1) if "are fractions 0-1" in description else ("", "")
    assert {"asr", "clean_baseline", "utility"} <= set(re.findall(r"\w+", fractions))
    assert {"accuracy", "macro_f1", "invalid_rate"} <= set(re.findall(r"\w+", percent.split("are percent 0-100")[0]))
    assert task_metrics([1, 1, 0, 0], [1, 0, 0, 0], bootstrap=0)["accuracy"] == pytest.approx(75.0)
    image = {"status": "ok", "clean": {"syntax": 0.0}, "stealth": {"linf": 0.03}, "steps_run": 1, "attack_seconds": 1.0}
    metrics = summarize([{**image, "adversarial": {"syntax": 1.0}}, {**image, "adversarial": {"syntax": 0.0}}])
    assert metrics["asr"]["syntax"] == 0.5


def test_a_single_budget_is_a_sentence_on_the_page_and_in_the_markdown(tmp_path):
    """One attack run at one budget: no asr_vs_eps.png (it would be a lone dot); the page and the
    Markdown say its success at its budget in a sentence instead."""
    write_record(tmp_path / "runs" / "one", attack_record("llava-hf/llava-1.5-7b-hf", 8, 13 / 16))
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    assert "asr_vs_eps" not in summary["figures"] and not (tmp_path / "out" / "asr_vs_eps.png").exists()
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert 'alt="asr_vs_eps"' not in page
    sentence = page.split('<p class="figure-text" data-figure="asr_vs_eps">', 1)[1].split("</p>", 1)[0]
    assert "no curve" in sentence and "81.2 % at eps 8/255" in sentence
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "81.2 % at eps 8/255" in md and "asr_vs_eps.png" not in md
