"""Every config composes; wrong values fail in one line naming the key, with no traceback."""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mmsafety.app import _register
from mmsafety.config import validate_common
from tests.helpers import CONF, builder_presets, checkpoint_presets, cli_command
from visual_attacks.config import validate_attack
from visual_attacks.run import build_case


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(autouse=True, scope="module")
def registered():
    _register()


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("task", options("task"))
def test_eval_configs_compose(model, task):
    with initialize_config_module("mmsafety.conf", version_base="1.3"):
        cfg = compose("eval", overrides=[f"model={model}", f"task={task}"])
    validate_common(cfg)
    assert cfg.model.adapter and cfg.task.tasks
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("attack", options("attack"))
@pytest.mark.parametrize("placement", options("placement"))
def test_attack_configs_compose(attack, placement):
    with initialize_config_module("mmsafety.conf", version_base="1.3"):
        cfg = compose("attack", overrides=[f"attack={attack}", f"placement={placement}"])
    validate_attack(cfg.attack)
    OmegaConf.to_container(cfg, resolve=True)
    build_case(cfg)  # the preset's objective is one its case implements; the case's own values check out


@pytest.mark.parametrize("target", options("target"))
def test_every_target_builds_a_tool_call_case(target):
    with initialize_config_module("mmsafety.conf", version_base="1.3"):
        cfg = compose("attack", overrides=[f"target={target}"])
    case = build_case(cfg)
    assert case.target.name == target and case.spec()["target"] == target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    from tests.helpers import run_cli as run

    return run("mmsafety-eval", *args, timeout=120)


@pytest.mark.parametrize("override,expected", [
    ("model=nonexistent", "model=nonexistent: no such option in 'model'; available: "),
    ("placement.dtype=float33", "placement.dtype"),
    ("model.nme=x", "model.nme: no such config key"),
    ("scoring=guess", "scoring"),
    ("batch_size=0", "batch_size=0: must be >= 1"),
    ("image_workers=-2", "image_workers=-2: must be >= 0"),
    ("task.tasks=[memes]", "task.tasks=['memes']: use GOAT-Bench tasks"),
])
def test_bad_overrides_fail_in_one_line(override, expected):
    proc = run_cli(override)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_attack_eps_fails_in_one_line():
    proc = subprocess.run([*cli_command("mmsafety-attack"), "attack.eps=-1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: attack.eps=-1: must be >= 0 (pixel units on [0,1], e.g. 8/255)"


def test_available_options_are_listed():
    proc = run_cli("model=nonexistent")
    for name in options("model"):
        assert name in proc.stderr


def test_every_value_of_a_sweep_is_checked_before_any_job_runs(tmp_path):
    proc = subprocess.run([*cli_command("mmsafety-attack"), "-m",
                           "attack.eps=8/255,-1", f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: attack.eps=-1: must be >= 0 (pixel units on [0,1], e.g. 8/255)"
    assert not any(tmp_path.iterdir()), "no job may start"


def test_bad_shard_fails_in_one_line():
    proc = run_cli("shard=3", "num_shards=2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: shard=3: must be in 0..1 (num_shards=2)"


REAL_CHECKPOINT_PRESETS = [m for m in options("model") if (CONF / "model" / f"{m}.yaml").read_text().count("name_or_path:")
                           and m != "open_clip_vit_b_32"
                           and "adapter: openai_compatible" not in (CONF / "model" / f"{m}.yaml").read_text()]  # served


@pytest.mark.parametrize("model", REAL_CHECKPOINT_PRESETS)
def test_real_checkpoint_presets_default_to_one_gpu_in_bf16(model):
    """A 7B preset picks placement=cuda (bf16) by itself; a placement on the command line still wins."""
    with initialize_config_module("mmsafety.conf", version_base="1.3"):
        for app in ("eval", "attack"):
            cfg = compose(app, overrides=[f"model={model}"])
            assert (cfg.placement.name, cfg.placement.dtype.name) == ("cuda", "bfloat16")
            assert compose(app, overrides=[f"model={model}", "placement=cpu"]).placement.name == "cpu"
    assert len(REAL_CHECKPOINT_PRESETS) >= 8  # the glob found the presets (a typo would skip them all)


def test_every_builder_has_its_tiny_preset_and_every_builder_preset_a_builder():
    """Adding a family: its builder (mmsafety.organisms.builders) and its presets; the tests find them."""
    from mmsafety.models.registry import adapter_names
    from mmsafety.organisms.builders import BUILDERS

    assert set(builder_presets()) == {name for name, builder in BUILDERS.items() if builder.vlm}
    assert set(builder_presets().values()) <= set(adapter_names())


@pytest.mark.parametrize("preset", sorted(checkpoint_presets()))
def test_real_preset_resolves_its_adapter_and_loading_path_without_weights(preset, monkeypatch):
    """The adapter class exists and its `load` reaches the transformers class it names (which exists),
    or, for a checkpoint that loads from disk only (open_clip), the one-line 'not found' error."""
    import importlib

    import transformers

    from mmsafety.errors import ModelNotFound
    from mmsafety.models.loading import LoadOptions
    from mmsafety.models.registry import adapter_class
    from mmsafety.placement import resolve_placement

    model = checkpoint_presets()[preset]
    cls = adapter_class(model["adapter"])
    module = importlib.import_module(cls.__module__)
    reached = []

    class Reached(Exception):
        pass

    def fake_load_hf_vlm(model_class_name, source, opts, placement):
        reached.append((model_class_name, source))
        raise Reached

    if hasattr(module, "load_hf_vlm"):
        monkeypatch.setattr(module, "load_hf_vlm", fake_load_hf_vlm)
    try:
        cls.load(model["name_or_path"], LoadOptions(local_files_only=True), resolve_placement("cpu", "float32"))
    except Reached:
        (names, source), = reached
        assert source == model["name_or_path"]
        for name in (names.values() if isinstance(names, dict) else [names]):
            assert hasattr(transformers, name), name
    except ModelNotFound as e:
        assert not hasattr(module, "load_hf_vlm") and model["name_or_path"].split(":")[-1] in str(e)
    else:
        pytest.fail(f"{preset}: loaded without weights?")
