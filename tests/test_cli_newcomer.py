"""A newcomer's second hour (issue 33, items 1-6): presets bring their case, typos get a did-you-mean,
`mmsafety-list` says what exists, a served model in a craft stage is shown the transfer route, and
one cache default serves the Makefile and the console scripts. Bad input is one line that says what
to type instead, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmsafety.app import check_command_line
from mmsafety.cli.command import compose
from mmsafety.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ATTACK_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "attack").glob("*.yaml"))
CASES = sorted(p.stem for p in (ROOT / "conf" / "case").glob("*.yaml"))


def script(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A console script as its wrapper runs it (argv[0] is its name)."""
    import tomllib

    module, function = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; sys.exit({function}())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def refusal(config_workload: str, *overrides: str) -> str:
    with pytest.raises(UserError) as error:
        check_command_line(config_workload, list(overrides), False)
    message = str(error.value)
    assert "\n" not in message
    return message


def brought_case(preset: str) -> str | None:
    """The case an attack preset's file selects in its defaults list, read as YAML (not through Hydra)."""
    defaults = yaml.safe_load((ROOT / "conf" / "attack" / f"{preset}.yaml").read_text()).get("defaults", [])
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.startswith("override /case"):
                    return value
    return None


# -- 1. a preset brings its workload ------------------------------------------------------------------

def test_every_harmbench_method_preset_brings_the_harmbench_case():
    """Independent reference: HarmBench's own test-case methods (harmbench.methods, not the presets)."""
    from harmbench.methods import METHODS

    harmbench = [n for n, m in METHODS.items() if "custom" not in m.harmbench_name]
    assert set(harmbench) == {"direct_request", "harmbench_pgd", "harmbench_pgd_blank", "harmbench_pgd_patch", "render_text"}
    for name in harmbench:
        assert compose("attack", [f"attack={name}"]).case.name == "harmbench_behaviors", name
    assert compose("attack", ["attack=verdict_flip"]).case.name == "meme_verdict"
    assert compose("attack", ["attack=toolmisuse"]).case.name == "tool_call"


@pytest.mark.parametrize("preset", ATTACK_PRESETS)
def test_a_preset_with_another_workloads_case_is_refused_naming_what_to_type(preset):
    """Every preset that selects a case refuses every other case in one line, before any model loads;
    a preset that selects none (Qi et al.'s PGD: any target-string case) runs on the default case."""
    own = brought_case(preset)
    if own is None:
        assert preset in ("pgd_linf", "pgd_unconstrained")
        assert compose("attack", [f"attack={preset}"]).case.name == "tool_call"
        return
    for case in CASES:
        if case == own:
            check_command_line("visual_attack", [f"attack={preset}", f"case={case}"], False)
            continue
        message = refusal("visual_attack", f"attack={preset}", f"case={case}")
        assert message.startswith(f"attack={preset} runs on case={own}, not case={case}: drop case={case}"), message
        fitting = sorted(p for p in ATTACK_PRESETS if brought_case(p) == case)
        assert f"attack={fitting[0]}" in message and all(p in message for p in fitting), message


def test_a_case_alone_names_the_attacks_that_bring_it():
    message = refusal("visual_attack", "case=harmbench_behaviors")
    assert message.startswith("attack=tool_call runs on case=tool_call, not case=harmbench_behaviors"), message
    assert "attack=direct_request, harmbench_pgd, harmbench_pgd_blank, harmbench_pgd_patch, render_text" in message


# -- a typed target on a case that reads none --------------------------------------------------------------

TARGETS = sorted(p.stem for p in (ROOT / "conf" / "target").glob("*.yaml"))


def case_reads_target(case: str) -> bool:
    """Independent reference: the case's own file, as text."""
    return "${target" in (ROOT / "conf" / "case" / f"{case}.yaml").read_text()


def attack_bringing(case: str) -> str:
    return sorted(p for p in ATTACK_PRESETS if brought_case(p) == case)[0]


@pytest.mark.parametrize("case", CASES)
def test_a_typed_target_is_refused_exactly_on_the_cases_that_read_none(case):
    preset = attack_bringing(case)
    readers = [c for c in CASES if case_reads_target(c)]
    assert readers and len(readers) < len(CASES)  # the shipped cases cover both sides
    for target in TARGETS:
        if case_reads_target(case):
            assert compose("attack", [f"attack={preset}", f"target={target}"]).target.name == target
            continue
        message = refusal("visual_attack", f"attack={preset}", f"target={target}")
        assert message.startswith(f"case={case} (brought by attack={preset}) has no target"), message
        assert f"drop target={target}" in message, message
        assert message.endswith(f"pick a case that reads one: case={', '.join(readers)}"), message
    # a key of the target is a typed target too; a deploy is read by every case's judge stage
    if not case_reads_target(case):
        assert "drop target.text=x" in refusal("visual_attack", f"attack={preset}", "target.text=x")
    assert compose("attack", [f"attack={preset}", "deploy=jpeg_75"]).deploy.name == "jpeg_75"


def test_a_target_sweep_on_a_case_that_reads_none_is_refused_before_any_job():
    with pytest.raises(UserError) as error:
        check_command_line("visual_attack", ["attack=verdict_flip", "target=send_email,exfiltrate"], True)
    assert str(error.value).startswith("case=meme_verdict (brought by attack=verdict_flip) has no target, "
                                       "so target=send_email would be ignored")


# -- 2. did you mean ------------------------------------------------------------------------------------

def typo(name: str) -> str:
    """The name with one character dropped from its middle: a typo a person makes."""
    i = len(name) // 2
    return name[:i] + name[i + 1:]


@pytest.mark.parametrize("group", ["model", "attack", "case", "target", "deploy", "placement"])
def test_an_unknown_option_of_every_group_names_the_closest_first(group):
    options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    for option in options:
        with pytest.raises(UserError) as error:
            compose("attack", [f"{group}={typo(option)}"])
        message = str(error.value)
        hint, _, listing = message.partition("; available: ")
        assert f"(did you mean {option}" in hint or f", {option}" in hint, message
        assert listing.split(", ") == options, message  # then every option, no *_schema entry


def test_llava7b_suggests_the_llava_checkpoints():
    with pytest.raises(UserError) as error:
        compose("eval", ["model=llava7b"])
    assert str(error.value).startswith("model=llava7b: no such option in 'model' (did you mean llava_1_5_7b"), error.value


@pytest.mark.parametrize("override, closest, node", [
    ("attack.stpes=500", "steps", "attack"),
    ("attack.eot.sample=3", "samples", "attack.eot"),
    ("model.name_or_pth=x", "name_or_path", "model"),
    ("heldout_prompt=4", "heldout_prompts", None),
])
def test_an_unknown_key_names_the_closest_first_then_the_keys_there(override, closest, node):
    with pytest.raises(UserError) as error:
        compose("attack", [override])
    message = str(error.value)
    key = override.split("=")[0]
    assert message.startswith(f"{key}: no such config key (did you mean {closest}"), message
    cfg = compose("attack", [])
    keys = list((cfg if node is None else cfg[node.split(".")[0]] if "." not in node else cfg.attack.eot).keys())
    assert message.endswith("keys here: " + ", ".join(keys)), message


def test_adding_a_key_beside_one_it_misspells_is_refused_and_a_new_key_is_not():
    message = refusal("visual_attack", "+attack.stpes=5")
    assert message == "+attack.stpes=5: adds a key stpes beside steps (did you mean attack.steps=5?)"
    check_command_line("visual_attack", ["attack=harmbench_pgd", "+case.judge.model.name_or_path=/ckpt/cls"], False)


# -- bad input to every command: one line that says what to type, nothing written ------------------------

@pytest.mark.parametrize("command, args, expected", [
    ("mmsafety-eval", ["model=llava7b"], "error: model=llava7b: no such option in 'model' (did you mean llava_1_5_7b"),
    ("mmsafety-eval", ["task.limt=3"], "error: task.limt: no such config key (did you mean limit?)"),
    ("mmsafety-attack", ["attack.stpes=500"], "error: attack.stpes: no such config key (did you mean steps?)"),
    ("mmsafety-attack", ["attack=harmbench_pgd", "case=tool_call"],
     "error: attack=harmbench_pgd runs on case=harmbench_behaviors, not case=tool_call: drop case=tool_call"),
    ("mmsafety-attack", ["model=gpt_4o"], "error: visual_attack with the craft stage"),
    ("mmsafety-attack", ["attack=verdict_flip", "target=exfiltrate"],
     "error: case=meme_verdict (brought by attack=verdict_flip) has no target, so target=exfiltrate would be ignored"),
    ("mmsafety-judge", ["attack_run=x", "deploy=jpeg75"], "error: deploy=jpeg75: no such option in 'deploy' (did you mean jpeg_75"),
    ("mmsafety-harmbench-judge", ["placement=cdua"], "error: placement=cdua: no such option in 'placement' (did you mean cuda"),
    ("mmsafety-judge-agreement", ["batchsize=2"], "error: batchsize: no such config key (did you mean batch_size?)"),
])
def test_bad_input_to_every_command_is_one_line_and_writes_nothing(command, args, expected, tmp_path):
    run = tmp_path / "run"
    proc = script(command, *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(expected) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert not run.exists() and not (tmp_path / "runs").exists()


# -- 5. a model that cannot take gradients is shown the transfer route ------------------------------------

@pytest.mark.parametrize("served, surrogate", [("gpt_4o", "llava_1_5_7b"), ("vllm_local", "llava_1_5_7b")])
def test_a_served_model_in_a_craft_stage_is_shown_the_transfer_route_and_its_commands_are_accepted(served, surrogate):
    message = refusal("visual_attack", f"model={served}", "attack.eps=8/255", "model.max_connections=4")
    craft = f"mmsafety-attack model={surrogate} attack.eps=8/255 hydra.run.dir=runs/craft"
    judge = f"mmsafety-judge attack_run=runs/craft model={served} model.max_connections=4"
    assert f"`{craft}` then `{judge}`" in message, message
    # The commands it names are ones the commands accept: the craft checks pass (capabilities by the
    # adapter class, no weights), and the judge's keys compose.
    check_command_line("visual_attack", craft.split()[1:-1], False)
    judged = compose("judge", judge.split()[1:])
    assert judged.attack_run == "runs/craft" and judged.model.adapter == "openai_compatible"


def test_the_route_of_a_sweep_stays_a_sweep():
    with pytest.raises(UserError) as error:
        check_command_line("visual_attack", ["model=gpt_4o", "attack.eps=8/255,16/255"], True)
    assert "`mmsafety-attack -m model=llava_1_5_7b attack.eps=8/255,16/255 hydra.sweep.dir=runs/craft`" in str(error.value)


# -- 4. mmsafety-list -------------------------------------------------------------------------------------

def fake_hub_checkpoint(hub: Path, repo: str, files: dict[str, bytes]) -> None:
    """A checkpoint in the Hugging Face cache layout (refs/main -> snapshots/<revision>/files)."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_list_models_says_what_each_can_do_and_whether_it_is_on_disk(tmp_path, monkeypatch):
    from mmsafety.cli import list_command
    from mmsafety.organisms.builders import built_path

    hub, cache = tmp_path / "hub", tmp_path / "mmsafety"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("MMSAFETY_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    fake_hub_checkpoint(hub, "llava-hf/llava-1.5-7b-hf", {"config.json": b"{}", "model.safetensors.index.json":
                        b'{"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}',
                        "model-00001.safetensors": b"x" * 1000, "model-00002.safetensors": b"y" * 1000})
    fake_hub_checkpoint(hub, "llava-hf/llava-1.5-13b-hf", {"config.json": b"{}", "model.safetensors.index.json":
                        b'{"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}',
                        "model-00001.safetensors": b"x"})  # one shard missing: not usable offline
    (built_path("tiny_llava") / "BUILT").parent.mkdir(parents=True)
    (built_path("tiny_llava") / "BUILT").write_text("tiny_llava\n")

    lines = {line.split()[0]: line for line in list_command.lines_for("models")}
    assert set(lines) == {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    assert "in cache" in lines["llava_1_5_7b"] and "not in cache" not in lines["llava_1_5_7b"]
    assert "7.1B" in lines["llava_1_5_7b"] and "llava-hf/llava-1.5-7b-hf" in lines["llava_1_5_7b"]
    assert "not in cache" in lines["llava_1_5_13b"] and "not in cache" in lines["qwen2_vl_7b"]
    assert "built, in cache" in lines["tiny_llava"] and "built on first use" in lines["organism"]
    assert "pixel_loss" not in lines["gpt_4o"] and "generate" in lines["gpt_4o"] and "served" in lines["gpt_4o"]
    assert "pixel_loss" in lines["organism"] and "score" in lines["organism"]
    assert all("\n" not in line for line in lines.values())


def test_list_attacks_names_the_case_and_the_paper_of_each():
    from mmsafety.cli import list_command

    lines = {line.split()[0]: line for line in list_command.lines_for("attacks")}
    assert set(lines) == set(ATTACK_PRESETS)
    for preset in ATTACK_PRESETS:
        assert f"case={brought_case(preset) or 'any'}" in lines[preset], lines[preset]
    assert "Qi et al. (2023), visual_attacker.py" in lines["pgd_linf"]
    assert "baselines/multimodalpgd/multimodalpgd.py" in lines["harmbench_pgd"]


def test_list_command_lists_every_kind_and_refuses_a_typo_in_one_line(tmp_path):
    from harmbench.judges import judges

    proc = script("mmsafety-list", "judges", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == judges.names()
    for kind, folder in (("tasks", "task"), ("cases", "case"), ("targets", "target"), ("deploys", "deploy")):
        from mmsafety.cli import list_command

        names = [line.split()[0] for line in list_command.lines_for(kind)]
        assert names == sorted(p.stem for p in (ROOT / "conf" / folder).glob("*.yaml"))
        assert all(len(line.split()) > 1 for line in list_command.lines_for(kind))  # each says what it is
    bad = script("mmsafety-list", "modles", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: modles: nothing to list (did you mean models?)")
    assert not any(tmp_path.iterdir())


def test_the_readme_first_screen_shows_the_list_command():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "mmsafety-list" in first_screen


# -- 6. one cache ------------------------------------------------------------------------------------------

def test_the_cache_default_is_the_xdg_cache_and_mmsafety_cache_overrides_it(tmp_path, monkeypatch):
    from mmsafety.paths import cache_dir, cache_root

    monkeypatch.delenv("MMSAFETY_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mmsafety" and not cache_root().exists()
    assert cache_dir().is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mmsafety"
    monkeypatch.setenv("MMSAFETY_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_make_and_a_console_script_use_the_same_cache(tmp_path):
    """What a recipe of the Makefile sees is what a command typed in a shell sees."""
    env = {k: v for k, v in os.environ.items() if k != "MMSAFETY_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    show = f"{sys.executable} -c 'from mmsafety.paths import cache_root; print(cache_root())'"
    in_make = subprocess.run(["make", "-s", "-C", str(ROOT), "--eval", f"show-cache: ; @{show}", "show-cache"],
                             capture_output=True, text=True, env=env, timeout=60)
    in_shell = subprocess.run(show, shell=True, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert in_make.returncode == 0, in_make.stderr
    assert in_make.stdout.strip() == in_shell.stdout.strip() == str(tmp_path / "xdg" / "mmsafety")
