"""The trained organisms ship inside the package (issue 31): first use loads them and trains nothing, every
file is checked against the sha256 in the manifest, and a damaged file is one line."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from mmsafety.errors import ConfigError
from mmsafety.organisms import builders, shipped
from mmsafety.organisms.builders import BUILDERS, built_path, ensure_built
from mmsafety.organisms.cli import main as build_organism_main

TRAINED = ("organism", "harmbench_judge", "harmbench_victim", "agent_organism")


def key(name: str, seed: int = 0) -> str:
    return shipped.folder_name(name, BUILDERS.get(name).current_version(), seed)


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """An empty cache, and a build that fails the test if anything asks for one."""
    monkeypatch.setenv("MMSAFETY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(shipped.MODE_ENV, raising=False)

    def refuse(name, seed=0, force=False):
        raise AssertionError(f"{name} was built, not loaded from the package")

    monkeypatch.setattr(builders, "build", refuse)


@pytest.mark.parametrize("name", TRAINED)
def test_the_trained_organisms_ship_at_their_builders_current_versions(name):
    """Bumping a recipe's version without shipping its new build would silently train on first use again."""
    entry = shipped.manifest()[key(name)]
    assert entry["builder"] == name and entry["seed"] == 0
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= set(entry["built_with"])
    assert "model.safetensors" in entry["files"] and "config.json" in entry["files"]


def test_every_shipped_file_is_in_the_manifest_with_its_sha256_and_size():
    entries = shipped.manifest()
    folders = {p.name for p in shipped.SHIPPED.iterdir() if p.is_dir()}
    assert folders == set(entries)  # no folder ships without an entry, no entry without its folder
    for name, entry in entries.items():
        on_disk = {p.relative_to(shipped.SHIPPED / name).as_posix(): p
                   for p in (shipped.SHIPPED / name).rglob("*") if p.is_file()}
        assert set(on_disk) == set(entry["files"]), name
        for rel, path in on_disk.items():
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["files"][rel]["sha256"], path
            assert len(data) == entry["files"][rel]["bytes"], path


def test_what_ships_is_small():
    total = sum(f["bytes"] for e in shipped.manifest().values() for f in e["files"].values())
    assert total < 8 * 2**20, f"{total / 2**20:.1f} MiB ship inside the package"


@pytest.mark.parametrize("name", TRAINED)
def test_first_use_loads_the_shipped_copy_and_trains_nothing(no_training, tmp_path, name):
    from tests.helpers import load_builtin

    path = ensure_built(name)
    assert path == shipped.SHIPPED / key(name)
    if BUILDERS.get(name).vlm:
        load_builtin(name)  # through the adapter's from_pretrained path, as a job loads it
    else:
        from harmbench.judges import load_causal_lm

        model, tokenizer = load_causal_lm(str(path))
        assert len(tokenizer) == model.config.vocab_size
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def copy_of_shipped(tmp_path):
    root = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED, root)
    return root


def test_a_damaged_shipped_file_is_one_line_naming_it_and_the_fix(tmp_path):
    root = copy_of_shipped(tmp_path)
    weights = root / key("organism") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as e:
        shipped.shipped_copy("organism", BUILDERS.get("organism").current_version(), 0, root=root)
    message = str(e.value)
    assert "\n" not in message and str(weights) in message and "sha256" in message
    assert "reinstall mmsafety" in message and "mmsafety-build-organism organism" in message
    (root / key("organism") / "tokenizer.json").unlink()
    weights.write_bytes(shipped.SHIPPED.joinpath(key("organism"), "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match=r"tokenizer\.json is missing"):
        shipped.shipped_copy("organism", BUILDERS.get("organism").current_version(), 0, root=root)


def test_a_damaged_shipped_organism_stops_a_job_in_one_line(tmp_path, monkeypatch, capsys):
    """Through the console script, in process (the package's folder is swapped for a damaged copy)."""
    from goat_bench.cli import main

    root = copy_of_shipped(tmp_path)
    (root / key("organism") / "config.json").write_text("{}")
    monkeypatch.setattr(shipped, "SHIPPED", root)
    monkeypatch.setenv("MMSAFETY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(shipped.MODE_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["mmsafety-eval", "task.limit=1", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "config.json has sha256" in err[0], err


def test_build_mode_ignores_the_shipped_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSAFETY_CACHE", str(tmp_path))
    monkeypatch.setenv(shipped.MODE_ENV, "build")
    calls = []
    monkeypatch.setattr(builders, "build", lambda name, seed=0, force=False: calls.append((name, seed)) or tmp_path)
    assert ensure_built("organism") == tmp_path and calls == [("organism", 0)]
    monkeypatch.setenv(shipped.MODE_ENV, "shipped")
    assert ensure_built("organism") == shipped.SHIPPED / key("organism") and len(calls) == 1


def test_a_family_that_does_not_ship_is_built_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSAFETY_CACHE", str(tmp_path))
    monkeypatch.delenv(shipped.MODE_ENV, raising=False)
    path = ensure_built("tiny_open_clip")
    assert path == built_path("tiny_open_clip") and (path / "BUILT").exists()


def test_an_unknown_mode_is_one_line(monkeypatch):
    monkeypatch.setenv(shipped.MODE_ENV, "download")
    with pytest.raises(ConfigError, match=r"MMSAFETY_ORGANISMS='download': use one of shipped, build"):
        ensure_built("organism")


def test_ship_then_look_up_round_trips_and_records_versions(tmp_path):
    built = tmp_path / "built"
    (built / "sub").mkdir(parents=True)
    (built / "model.safetensors").write_bytes(b"weights")
    (built / "sub" / "tokenizer.json").write_text("{}")
    (built / "BUILT").write_text("x")  # the cache's marker does not ship
    root = tmp_path / "pkg"
    target = shipped.ship("thing", 3, 1, built, {"acc": 0.5}, root=root)
    entry = shipped.manifest(root)["thing-v3-seed1"]
    assert set(entry["files"]) == {"model.safetensors", "sub/tokenizer.json"} and not (target / "BUILT").exists()
    assert entry["files"]["model.safetensors"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert entry["behaviour"] == {"acc": 0.5} and entry["built_with"] == shipped.library_versions()
    assert shipped.shipped_copy("thing", 3, 1, root=root) == target
    assert shipped.shipped_copy("thing", 4, 1, root=root) is None  # another version: built, not shipped
    assert shipped.version_drift(entry) == {}
    entry["built_with"]["torch"] = "0.0.1"
    assert shipped.version_drift(entry) == {"torch": ("0.0.1", shipped.library_versions()["torch"])}
    json.dumps(shipped.manifest(root))  # stays plain JSON


def test_the_command_refuses_an_unknown_name_in_one_line(capsys):
    assert build_organism_main(["nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.builder=nope: not registered"), err


def test_the_command_lists_which_builders_ship(capsys):
    assert build_organism_main(["--list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in TRAINED:
        assert "shipped" in rows[name].split()[1], rows[name]
    assert "built on first use" in rows["tiny_llava"]


def test_the_console_script_is_declared():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mmsafety-build-organism"] == "mmsafety.organisms.cli:main"
    proc = subprocess.run([sys.executable, "-m", "mmsafety.organisms.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "mmsafety-build-organism" in proc.stdout
