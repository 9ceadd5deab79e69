"""The docs site builds with `mkdocs build --strict` (every broken link, anchor, missing page or API
object fails it), and its measured-results pages show every row of bench/results/*.jsonl with its date
and machine (issue 28 item 6)."""

from __future__ import annotations

import collections
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def page_text(site: Path, page: str) -> str:
    """A built page's article text (not its navigation or table of contents, which repeat headings),
    tags stripped and entities decoded."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    article = re.search(r"<article\b.*?</article>", raw, flags=re.S)
    assert article, f"{page}: no <article> in the built page"
    return html.unescape(re.sub(r"<[^>]+>", " ", article.group(0)))


def result_files() -> dict[str, list[dict]]:
    return {path.stem: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for path in sorted(RESULTS.glob("*.jsonl"))}


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "reference" / "api" / "index.html").is_file()


@pytest.mark.parametrize("stem", sorted(result_files()))
def test_every_measured_row_is_on_its_page_with_date_and_machine(site, stem):
    """Counted from the JSON files directly: each row's date (to the minute, as a table shows it) appears
    at least as often as rows carry it, and each row's core count is stated beside it."""
    rows = result_files()[stem]
    text = page_text(site, f"results/{stem}")
    for when, count in collections.Counter(str(row["time"]).replace("T", " ")[:16] for row in rows).items():
        assert text.count(when) >= count, f"results/{stem}: {count} row(s) of {when} in the file, {text.count(when)} on the page"
    for row in rows:
        assert f"{row['machine']['cores']} cores" in text, f"results/{stem}: the machine of {row['time']} is missing"


def test_results_index_links_every_file(site):
    text = (site / "results" / "index.html").read_text(encoding="utf-8")
    for stem in result_files():
        assert f'href="{stem}/"' in text, f"the results index does not link {stem}"


def test_changelog_is_on_the_site(site):
    first_heading = next(line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## "))
    assert first_heading[3:].strip() in page_text(site, "changelog")


def test_configuration_lists_every_option_of_every_group(site):
    text = page_text(site, "configuration")
    for path in (ROOT / "conf").rglob("*.yaml"):
        if path.parent != ROOT / "conf":  # a group's option, not a primary config
            assert path.stem in text, f"configuration page misses {path.relative_to(ROOT)}"
