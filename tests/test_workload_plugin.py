"""The workload contract: a workload defined only under tests/ shows in all four leaderboard
formats, merged from its samples by its own rescore, with no edit to the core."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pytest

from mmsafety.leaderboard import write_leaderboard
from mmsafety.records import RunRecord
from mmsafety.leaderboard.views import VIEWS
from mmsafety.workload import WORKLOADS
from tests import toy_workload
from tests.toy_workload import CoinFlips


@pytest.fixture
def toy(monkeypatch):
    WORKLOADS.names()  # the installed plug-ins first, then the toy beside them for this test only
    monkeypatch.setitem(WORKLOADS._items, "coin_flips", CoinFlips())
    VIEWS.names()
    monkeypatch.setitem(VIEWS._items, "coin_flips", toy_workload.VIEWS)
    return WORKLOADS.get("coin_flips")


def write_run(folder, model: str, flips: list[int], shard: int = 0, shards: int = 1) -> None:
    record = RunRecord.open(folder, "coin_flips", {"model": model, "shard": shard}, seeds={"seed": 0})
    record.update(model={"name": model}, spec={"coin": "fair?", "shard": {"index": shard, "count": shards}})
    for i, heads in enumerate(flips):
        record.add_sample({"flip": f"{shard}-{i}", "status": "ok", "heads": heads})
    record.update(metrics=CoinFlips().rescore(record.samples, record.data))
    record.write("completed")
    record.close()


def test_a_toy_workload_shows_in_every_format(toy, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "penny", "penny", [1, 1, 0, 1])
    write_run(runs / "dime0", "dime", [1, 0], shard=0, shards=2)
    write_run(runs / "dime1", "dime", [0, 0, 0], shard=1, shards=2)
    summary = write_leaderboard([runs], tmp_path / "out", with_paper=True)
    assert summary["problems"] == [] and summary["rows"] == {"coin_flips": 3}
    out = tmp_path / "out"

    rows = {r["model"]: r for r in json.loads((out / "leaderboard.json").read_text())["coin_flips"]}
    assert rows["penny"]["heads_rate"] == 0.75 and rows["penny"]["flips"] == 4
    assert rows["dime"]["heads_rate"] == 0.2 and rows["dime"]["flips"] == 5  # the two shards merged, re-scored
    assert rows["a fair coin"]["status"] == "reported" and rows["a fair coin"]["heads_rate"] == 0.5

    table = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {(r["table"], r["model"], r["heads_rate"]) for r in table} == {
        ("coin_flips", "penny", "0.75"), ("coin_flips", "dime", "0.2"), ("coin_flips", "a fair coin", "0.5")}

    md = (out / "leaderboard.md").read_text()
    assert "## Coin flips (toy workload)" in md and "| penny | unknown | completed | 4 | 0.75 |" in md

    page = (out / "leaderboard.html").read_text()
    assert "<h2>Coin flips (toy workload)</h2>" in page
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page.split("penny</td>", 1)[1])[:4]
    assert cells == ["unknown", "completed", "4", "0.75"]  # the core's data column: the toy's spec does not say
    assert 'alt="toy_heads"' in page and (out / "toy_heads.png").exists()


def test_a_record_of_a_workload_that_is_not_installed_is_a_problem_not_a_row(tmp_path):
    write_run(tmp_path / "runs" / "penny", "penny", [1, 0])  # no toy registered in this test
    summary = write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    assert summary["rows"] == {}
    (problem,) = summary["problems"]
    assert "workload 'coin_flips' is not installed" in problem


def test_the_toy_needs_are_checked_against_an_adapter_class(toy):
    from omegaconf import OmegaConf

    from mmsafety.cli.loading import check_capabilities
    from mmsafety.errors import ConfigError

    cfg = OmegaConf.create({"model": {"name": "tiny_open_clip", "adapter": "open_clip"}})
    check_capabilities(cfg, "coin_flips", toy.needs(cfg))  # open_clip scores choices
    toy_needs_generation = {"the coin narrator": frozenset({"generate"})}
    with pytest.raises(ConfigError, match="coin_flips with the coin narrator needs a model that can generate"):
        check_capabilities(cfg, "coin_flips", toy_needs_generation)


def test_a_workload_without_sample_views_gets_the_generic_sample_browser(toy, tmp_path):
    """The core shows any workload's samples.jsonl fields in the page's sample browser, escaped."""
    hostile = "</textarea><script>alert('x')</script><img src=x onerror=alert(1)> \" ' </details>"
    record = RunRecord.open(tmp_path / "runs" / "penny", "coin_flips", {"model": "penny"}, seeds={"seed": 0})
    record.update(model={"name": "penny"}, spec={"coin": "fair?", "synthetic": True})
    for i in range(3):
        record.add_sample({"flip": f"flip-{i}", "status": "ok", "heads": i % 2, "said": hostile})
    record.update(metrics=CoinFlips().rescore(record.samples, record.data))
    record.write("completed")
    record.close()
    write_leaderboard([tmp_path / "runs"], tmp_path / "out")
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    browser = page.split("<h2>Samples</h2>", 1)[1]
    assert browser.count('<div class="sample">') == 3 and "<b>flip-0</b>" in browser
    assert '<div class="q">said</div>' in browser and '<div class="q">heads</div><div class="a">1</div>' in browser
    assert "<script>alert" not in page and "<img src=x" not in page and page.count("</details>") == 1
    assert html.escape(json.dumps(hostile)) in browser  # the field's value, as JSON text
    assert 'class="c-data d-synthetic">synthetic</td>' in page  # the spec said synthetic: the row is marked
