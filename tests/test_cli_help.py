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
    # Only options a user can pick, and only the groups this command reads (issue 33 item 3).
    assert "_schema" not in proc.stdout, proc.stdout
    listed = {line.split(":")[0] for line in proc.stdout.splitlines() if re.match(r"^[a-z_/]+: \S", line)}
    config = CONFIGS.get(script)
    if config is not None:
        assert listed & ALL_GROUPS == groups_of(config), proc.stdout


CONFIGS = {"mmsafety-eval": "eval", "mmsafety-attack": "attack", "mmsafety-judge": "judge",
           "mmsafety-harmbench-judge": "harmbench_judge", "mmsafety-judge-agreement": "judge_agreement"}
ALL_GROUPS = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")}


def groups_of(config: str) -> set[str]:
    """The groups conf/<config>.yaml picks in its defaults list (read as YAML, not through Hydra)."""
    import yaml

    entries = yaml.safe_load((ROOT / "conf" / f"{config}.yaml").read_text())["defaults"]
    return {key for e in entries if isinstance(e, dict) for key in e if not key.startswith(("override", "hydra"))}


def test_the_groups_of_a_command_are_read_from_its_own_config():
    assert groups_of("eval") == {"placement", "model", "task"}
    assert groups_of("attack") == {"placement", "model", "case", "attack", "target", "deploy"}
    assert groups_of("judge_agreement") == set()
