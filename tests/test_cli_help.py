"""Every console script in pyproject's [project.scripts] answers `--help` (issue 28 item 5): exit status
0, a text that names the command and shows a call of it, and nothing written where it runs. The list
comes from pyproject.toml, so a command added there is checked without touching this file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script ARGS...` as its console-script wrapper runs it (argv[0] is the command's name), without
    relying on the scripts being on PATH."""
    module, function = SCRIPTS[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {function}; sys.exit({function}())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"})


def test_the_scripts_are_found():
    assert len(SCRIPTS) >= 7 and all(name.startswith("mmsafety-") for name in SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_answers_help(script, tmp_path):
    proc = run_script(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # A call of the command (usage line or example), not Hydra's "<job> is powered by Hydra" alone.
    calls = [line for line in proc.stdout.splitlines()
             if re.match(rf"\s*(usage: )?(`)?{re.escape(script)}( |$)", line)]
    assert calls, proc.stdout
    assert len(proc.stdout.splitlines()) >= 5, proc.stdout  # what it does and its options, not one line
    assert not any(tmp_path.iterdir()), "--help must not create a run folder"
