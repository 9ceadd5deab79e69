"""Shared test helpers, derived from the configs and registries (no hand-kept lists of families)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from mmsafety.models.loading import LoadOptions
from mmsafety.models.registry import adapter_class
from mmsafety.organisms.builders import ensure_built
from mmsafety.placement import resolve_placement

CONF = Path(__file__).resolve().parents[1] / "conf"


def model_presets() -> dict[str, dict]:
    """Every conf/model preset by name, as written (name, adapter, builder or name_or_path)."""
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((CONF / "model").glob("*.yaml"))}


def builder_presets() -> dict[str, str]:
    """Builder name -> adapter name, from the presets that build their model offline (tiny_*, organism)."""
    return {m["builder"]: m["adapter"] for m in model_presets().values() if m.get("builder")}


def checkpoint_presets() -> dict[str, dict]:
    """The presets of real checkpoints (model.name_or_path), served models aside (no checkpoint to
    load: tests/test_served_*.py compose and check their presets)."""
    return {name: m for name, m in model_presets().items() if m.get("name_or_path")
            and not getattr(adapter_class(m["adapter"]), "takes_model_config", False)}


def load_builtin(builder: str, seed: int = 0, dtype: str = "float32", device: str = "cpu", **execution):
    """A built-in model's adapter; `execution`: gradient_checkpointing / compile (placement options)."""
    path = ensure_built(builder, seed)
    return adapter_class(builder_presets()[builder]).load(str(path), LoadOptions(), resolve_placement(device, dtype, **execution))


# The console scripts, run in a subprocess as a user would (python -c: no dependence on PATH).
CLIS = {"mmsafety-eval": "goat_bench.cli", "mmsafety-attack": "visual_attacks.cli",
        "mmsafety-leaderboard": "mmsafety.leaderboard.cli", "mmsafety-judge": "visual_attacks.cli:judge_main"}


def cli_command(script: str) -> list[str]:
    module, _, function = CLIS[script].partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {function or 'main'} as main; sys.exit(main())"]


def run_cli(script: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`script ARGS...` in a subprocess (HYDRA_FULL_ERROR off, as for a user); stdout and stderr captured."""
    return subprocess.run([*cli_command(script), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})})
