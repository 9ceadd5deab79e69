"""conf/ ships inside the wheel: the apps compose their configs from an installed package too."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("mmsafety-*.whl"))


def test_wheel_contains_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml in ROOT.glob("conf/**/*.yaml"):
        assert f"mmsafety/conf/{yaml.relative_to(ROOT / 'conf')}" in names, yaml
    assert {"goat_bench/cli.py", "visual_attacks/cli.py", "mmsafety/models/llava.py"} <= names


def test_installed_wheel_composes_configs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("import mmsafety, mmsafety.app as a; from hydra import compose, initialize_config_module; a._register();\n"
            "assert mmsafety.__file__.startswith(%r), mmsafety.__file__\n"
            "with initialize_config_module('mmsafety.conf', version_base='1.3'):\n"
            "    print(compose('eval').model.name, compose('attack').target.name)") % str(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["organism", "send_email"]


def test_wheel_ships_the_organisms_and_their_manifest(wheel):
    from mmsafety.organisms import shipped

    names = set(zipfile.ZipFile(wheel).namelist())
    entries = shipped.manifest()
    assert entries and "mmsafety/organisms/shipped/manifest.json" in names
    for folder, entry in entries.items():
        for rel in entry["files"]:
            assert f"mmsafety/organisms/shipped/{folder}/{rel}" in names, (folder, rel)
    assert {"mmsafety/trackers/wandb_callback.py", "mmsafety/conf/callbacks/wandb.yaml"} <= names


def test_sdist_ships_the_organisms_and_their_manifest(tmp_path):
    import tarfile

    from mmsafety.organisms import shipped

    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(tmp_path / proc.stdout.strip().splitlines()[-1]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "mmsafety/organisms/shipped/manifest.json" in names
    for folder, entry in shipped.manifest().items():
        assert {f"mmsafety/organisms/shipped/{folder}/{rel}" for rel in entry["files"]} <= names, folder


def test_installed_wheel_loads_the_shipped_organism_without_building(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("from mmsafety.organisms.builders import ensure_built\n"
            "import mmsafety.organisms.builders as b\n"
            "b.build = lambda *a, **k: (_ for _ in ()).throw(SystemExit('built instead of loaded'))\n"
            "print(ensure_built('organism'))")
    env = {**os.environ, "PYTHONPATH": str(target), "MMSAFETY_CACHE": str(tmp_path / "cache")}
    env.pop("MMSAFETY_ORGANISMS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(str(target / "mmsafety" / "organisms" / "shipped")), proc.stdout
