"""One plug-in mechanism: the `mmsafety.plugins` entry-point group, read lazily and per entry.

A fake installed package (a dist-info folder on sys.path, as pip leaves one) declares entries; the
tests check that a lookup imports only the entry it needs, that a broken entry is one warning and
leaves the registry whole, and that no registry does hidden work at import.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import tomllib
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mmsafety.errors import ConfigError
from mmsafety.registry import PLUGIN_GROUP, PluginWarning, Registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def widgets(tmp_path, monkeypatch):
    """A registry of kind `widget` and a fake installed package with four `widget:` entries."""
    (tmp_path / "widget_registry.py").write_text(
        "from mmsafety.registry import Registry\n"
        "WIDGETS = Registry('widget.name', kind='widget', modules=['widget_core', 'widget_core_broken'])\n")
    (tmp_path / "widget_good.py").write_text("from widget_registry import WIDGETS\nWIDGETS.add('good', 'G')\nTHING = 'T'\n")
    (tmp_path / "widget_other.py").write_text("from widget_registry import WIDGETS\nWIDGETS.add('other', 'O')\n")
    (tmp_path / "widget_broken.py").write_text("raise ImportError('needs frobnicate, which is not installed')\n")
    (tmp_path / "widget_silent.py").write_text("# imports fine but registers nothing\n")
    (tmp_path / "widget_core.py").write_text("from widget_registry import WIDGETS\nWIDGETS.add('core', 'C')\n")
    (tmp_path / "widget_core_broken.py").write_text("raise RuntimeError('a bug in a built-in module')\n")
    dist = tmp_path / "fake_widgets-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-widgets\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[{PLUGIN_GROUP}]\n"
        "widget:good = widget_good\n"
        "widget:other = widget_other\n"
        "widget:broken = widget_broken\n"
        "widget:silent = widget_silent\n"
        "widget:thing = widget_good:THING\n"
        "gadget:good = widget_broken\n")  # another kind: never this registry's business
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("widget_registry", "widget_good", "widget_other", "widget_broken", "widget_silent",
                 "widget_core", "widget_core_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import widget_registry

    return widget_registry.WIDGETS


def test_a_lookup_imports_only_its_own_entry(widgets):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a lookup of a working entry warns about nothing
        assert widgets.get("good") == "G"
    assert "widget_other" not in sys.modules and "widget_broken" not in sys.modules
    assert widgets.get("thing") == "T"  # module:object registers the object under the entry's name
    # Declared names are known without importing them; another kind's entries are not listed.
    with pytest.warns(PluginWarning, match="widget_core_broken"):  # names() imports the built-in modules
        assert {"good", "other", "broken", "silent", "thing", "core"} <= set(widgets.names())
    assert "widget_other" not in sys.modules


def test_a_broken_entry_is_one_warning_and_the_registry_stays_whole(widgets):
    with pytest.warns(PluginWarning) as caught:
        assert "broken" not in widgets
    broken = [str(w.message) for w in caught if "widget:broken" in str(w.message)]
    assert len(broken) == 1 and "needs frobnicate" in broken[0] and "\n" not in broken[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: asking again is quiet
        assert "broken" not in widgets
    assert widgets.get("other") == "O" and widgets.get("good") == "G"
    assert "broken" not in widgets.names()


def test_every_failure_is_one_warning_and_items_has_every_working_entry(widgets):
    with pytest.warns(PluginWarning) as caught:
        items = dict(widgets.items())
    assert items == {"good": "G", "other": "O", "thing": "T", "core": "C"}
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3, messages  # broken entry, silent entry, broken core module
    assert any("did not register 'silent'" in m for m in messages)
    assert any("widget_core_broken" in m and "a bug in a built-in module" in m for m in messages)
    # A built-in module that failed once is not retried into a half-filled registry.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dict(widgets.items()) == items


def test_an_unknown_name_is_one_line_with_a_suggestion(widgets):
    with pytest.warns(PluginWarning):
        with pytest.raises(ConfigError) as error:
            widgets.get("godo")
    message = str(error.value)
    assert message.startswith("widget.name=godo: not registered (did you mean good?)") and "\n" not in message


def test_the_installed_entries_are_the_ones_pyproject_declares():
    """A stale install (an old egg-info in the checkout, or no reinstall after pyproject changed)
    would hide plug-ins; the fix is `pip install -e .` (and removing a stale mmsafety.egg-info)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][PLUGIN_GROUP]
    installed = {e.name: e.value for e in entry_points(group=PLUGIN_GROUP) if e.dist and e.dist.name == "mmsafety"}
    assert installed == declared, "reinstall: pip install -e . (and remove a stale mmsafety.egg-info)"


def test_every_declared_entry_loads_and_registers_its_name():
    """garak-style: every plug-in entry this project declares is imported and found under its name."""
    from mmsafety.attack_case import CASES, OBJECTIVES
    from mmsafety.leaderboard.views import CASE_SECTIONS, VIEWS
    from mmsafety.organisms.builders import BUILDERS
    from mmsafety.workload import WORKLOADS
    from harmbench.judges import judges
    from visual_attacks.targets import TARGET_KINDS

    by_kind = {"workload": WORKLOADS, "case": CASES, "objective": OBJECTIVES, "builder": BUILDERS,
               "case_views": CASE_SECTIONS, "views": VIEWS, "judge": judges, "target": TARGET_KINDS}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][PLUGIN_GROUP]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        for entry in declared:
            kind, name = entry.split(":")
            assert by_kind[kind].get(name) is not None


def test_every_attack_preset_is_a_harmbench_method_and_a_typo_is_refused():
    from harmbench.methods import METHODS, method_for

    presets = {p.stem for p in (ROOT / "conf" / "attack").glob("*.yaml")}
    assert presets <= set(METHODS.names())  # case.method defaults to attack.name: none may be refused
    assert method_for("harmbench_pgd_patch").patch_fraction == 0.2
    with pytest.raises(ConfigError, match=r"^case.method=harmbench_pdg: not registered \(did you mean harmbench_pgd\?\)"):
        method_for("harmbench_pdg")


LIGHT = """
import json, sys
from mmsafety.workload import WORKLOADS
from mmsafety.attack_case import CASES
import mmsafety.organisms.builders, mmsafety.record_schema, mmsafety.leaderboard.views
for kind in WORKLOADS.names():
    WORKLOADS.get(kind)
print(json.dumps([m for m in ("torch", "transformers") if m in sys.modules]))
"""


def test_importing_the_registries_and_reading_workloads_does_no_heavy_work():
    """No version computed at import, no registry loading every entry: the workloads' record shapes
    come without torch or transformers (attack cases and models stay unimported until asked for)."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_served_client_starts_its_worker_on_first_use():
    from mmsafety.served.client import Failure, ServedClient
    from mmsafety.served.settings import settings_from_config

    def workers() -> int:
        return sum(t.name == "mmsafety-served" and t.is_alive() for t in threading.enumerate())

    before = workers()
    client = ServedClient(settings_from_config({"name_or_path": "m", "base_url": "http://127.0.0.1:9/v1",
                                                "max_retries": 0, "timeout_s": 2, "cache": False}))
    try:
        assert workers() == before  # constructing it started nothing
        results = client.complete([({"model": "m", "messages": ["x"]}, lambda: {"model": "m", "messages": []})])
        assert isinstance(results[0], Failure) and workers() == before + 1
    finally:
        client.close()
    assert workers() == before
    ServedClient(settings_from_config({"name_or_path": "m", "base_url": "http://127.0.0.1:9/v1", "cache": False})).close()


def test_the_toy_workload_ships_its_config_and_runs_through_the_command_line(tmp_path, organism):
    """A plug-in package declared only by its entries (a workload and its config package): the core's
    app composes the plug-in's primary config and its `coin` group (Hydra search-path plugin), runs the
    job on the organism and writes a record that the leaderboard shows."""
    import json
    import os

    site = tmp_path / "site"
    dist = site / "toy_coin-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-coin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[{PLUGIN_GROUP}]\nworkload:coin_flips = tests.toy_workload:WORKLOAD\nviews:coin_flips = tests.toy_workload:VIEWS\n"
        "conf:coin_flips = tests.toy_conf\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "HYDRA_FULL_ERROR": "0"}
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", "from mmsafety.app import run_app; run_app('coin_flips')",
                           "coin.flips=3", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    record = json.loads((run_dir / "record.json").read_text())
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert record["kind"] == "coin_flips" and record["status"] == "completed"
    assert [s["flip"] for s in samples] == ["0", "1", "2"]  # the group's default (4) overridden on the command line
    assert record["metrics"]["heads_rate"] == sum(s["heads"] for s in samples) / 3
    board = subprocess.run([sys.executable, "-c", "import sys; from mmsafety.leaderboard.cli import main; sys.exit(main())",
                            str(run_dir), "--out", str(tmp_path / "board")],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert board.returncode == 0, board.stderr[-3000:]
    rows = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["coin_flips"]
    assert [r["flips"] for r in rows] == [3]
