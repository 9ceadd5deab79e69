"""One schema per concept (issue 28): a served model's keys and their defaults live once
(ServedModelConfig), each objective is a config node of its own (`attack/objective=NAME`), and runs
recorded in the earlier layout resume and merge as the same jobs (mmsafety.config_migration).

The fixtures in tests/fixtures/layout1/ were written by the code of commit 757700f, before the
change: `configs.json` holds the job configs that code composed for thirteen commands, with their
config_sha256; `eval_run/` is a real GOAT-Bench run folder it left (record.json, samples.jsonl).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmsafety.app import compose_config
from mmsafety.cli.migrate_runs import main as migrate_main
from mmsafety.cli.run_identity import job_config_sha256
from mmsafety.config import ServedModelConfig
from mmsafety.config_migration import upgrade_config
from mmsafety.records import config_sha256, read_samples
from mmsafety.served.settings import ServedSettings, settings_from_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "layout1"
LAYOUT_1 = json.loads((FIXTURES / "configs.json").read_text())
# The same commands typed today: only the objective's keys moved.
TODAY = {"attack.objective=target_corpus": "attack/objective=target_corpus",
         "attack.target_corpus=corpus.txt": "attack.objective.corpus=corpus.txt",
         "attack.response_weight=0.2": "attack.objective.response_weight=0.2"}


def job_config(cfg) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return container


@pytest.mark.parametrize("case", LAYOUT_1, ids=lambda c: " ".join([c["app"], *c["overrides"]]) or c["app"])
def test_a_layout_1_config_reads_as_the_same_command_composes_today(case):
    today = compose_config(case["app"], [TODAY.get(o, o) for o in case["overrides"]])
    assert case["config_sha256"] != job_config_sha256(today)  # the layout did change every hash
    assert upgrade_config(case["config"]) == job_config(today)
    assert config_sha256(upgrade_config(case["config"])) == job_config_sha256(today)


@pytest.mark.parametrize("case", LAYOUT_1, ids=lambda c: " ".join([c["app"], *c["overrides"]]) or c["app"])
def test_a_config_in_todays_layout_is_left_as_it_is(case):
    today = job_config(compose_config(case["app"], [TODAY.get(o, o) for o in case["overrides"]]))
    assert upgrade_config(today) == today


def test_each_objective_is_a_node_with_only_its_own_keys():
    keys = {name: set(job_config(compose_config("attack", [f"attack=tool_call", f"attack/objective={name}"]))["attack"]["objective"])
            for name in ("target_string", "tool_misuse", "target_corpus", "clip_image_embed", "verdict_flip")}
    assert keys == {"target_string": {"name"}, "tool_misuse": {"name", "response_weight", "l2_weight", "clean_answer_tokens"},
                    "target_corpus": {"name", "corpus"}, "clip_image_embed": {"name", "target_crop_scale"},
                    "verdict_flip": {"name"}}
    # Switching a paper preset's objective replaces its node whole (no key of the old one left behind).
    switched = compose_config("attack", ["attack=toolmisuse", "attack/objective=target_string"]).attack.objective
    assert dict(switched) == {"name": "target_string"}


def test_a_local_model_has_no_served_keys_and_a_served_one_has_them_all_with_their_defaults():
    local = job_config(compose_config("eval", ["model=organism"]))["model"]
    served = job_config(compose_config("eval", ["model=openai_compatible"]))["model"]
    served_keys = {f.name for f in fields(ServedModelConfig)} - {"name", "adapter", "name_or_path", "builder", "seed",
                                                                   "allow_pickle", "trust_remote_code", "revision",
                                                                   "local_files_only"}
    assert not served_keys & set(local)
    assert served_keys <= set(served) and served["max_connections"] == 16 and served["top_logprobs"] == 20


def test_served_settings_take_their_defaults_from_the_schema_alone():
    """Change a default in ServedModelConfig and the settings follow: there is no second copy."""
    settings = settings_from_config({"name_or_path": "m", "base_url": "http://127.0.0.1:9/v1"})
    defaults = {f.name: f.default for f in fields(ServedModelConfig) if f.default is not None and not callable(f.default)}
    for name in ("max_connections", "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "image_format",
                 "jpeg_quality", "temperature", "top_logprobs", "api_key_env"):
        assert getattr(settings, name) == defaults[name], name
    assert all(f.default is f.default_factory for f in fields(ServedSettings))  # no defaults of its own (both MISSING)
    composed = settings_from_config(compose_config("eval", ["model=openai_compatible"]).model)
    assert {f.name: getattr(composed, f.name) for f in fields(ServedSettings) if f.name not in ("model", "base_url")} == \
        {f.name: getattr(settings, f.name) for f in fields(ServedSettings) if f.name not in ("model", "base_url")}


def _eval(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from goat_bench.cli import main; sys.exit(main())",
                           "task.limit=2", "task.synthetic_per_task=2", *overrides],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_layout_1_run_in_its_own_folder_resumes_without_redoing_a_sample(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "eval_run", run)
    before = (run / "samples.jsonl").read_bytes()
    proc = _eval(tmp_path, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    assert (run / "samples.jsonl").read_bytes() == before  # nothing redone, nothing appended
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "completed" and record["timing"]["resumes"] == 1
    assert record["config_sha256"] == config_sha256(record["config"]) and "objective" not in record["config"]
    assert "base_url" not in record["config"]["model"]


def test_migrate_runs_renames_a_hash_named_folder_so_the_same_command_resumes_it(tmp_path):
    (tmp_path / "probe").mkdir()
    fresh = _eval(tmp_path / "probe")
    assert fresh.returncode == 0, fresh.stderr
    today = next((tmp_path / "probe" / "runs").rglob("record.json")).parent  # where the command puts its run today
    old_sha = json.loads((FIXTURES / "eval_run" / "record.json").read_text())["config_sha256"]
    work = tmp_path / "work"
    old_folder = work / today.relative_to(tmp_path / "probe")
    old_folder = old_folder.with_name(old_folder.name[:-8] + old_sha[:8])
    shutil.copytree(FIXTURES / "eval_run", old_folder)
    before = (old_folder / "samples.jsonl").read_bytes()

    assert migrate_main([str(work / "runs"), "--dry-run"]) == 0 and old_folder.exists()  # dry run: nothing moved
    assert migrate_main([str(work / "runs")]) == 0
    migrated = work / today.relative_to(tmp_path / "probe")
    assert not old_folder.exists() and (migrated / "samples.jsonl").read_bytes() == before
    assert migrate_main([str(work / "runs")]) == 0  # a second pass finds it in today's layout

    proc = _eval(work)  # the same command, no folder named: it finds the migrated run
    assert proc.returncode == 0, proc.stderr
    assert [p.parent for p in (work / "runs").rglob("record.json")] == [migrated]
    assert (migrated / "samples.jsonl").read_bytes() == before
    assert json.loads((migrated / "record.json").read_text())["timing"]["resumes"] == 1


def test_the_leaderboard_merges_a_layout_1_run_with_the_same_job_run_today(tmp_path):
    from mmsafety.leaderboard.collect import build_rows

    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(FIXTURES / "eval_run", old)
    assert _eval(tmp_path, f"hydra.run.dir={new}").returncode == 0
    rows, problems = build_rows([old, new])
    assert len(rows) == 1 and not problems, ([r.note for r in rows], problems)


def test_keys_that_moved_are_named_with_where_they_are_now():
    from mmsafety.app import check_command_line
    from mmsafety.errors import UserError

    expected = {"attack.response_weight=0.2": "moved to attack.objective.response_weight, a key of objective tool_misuse",
                "attack.target_corpus=f.txt": "moved to attack.objective.corpus, a key of objective target_corpus",
                "attack.objective=verdict_flip": "pick it with attack/objective=verdict_flip",
                "model.max_tokens=3": "a key of served models only"}
    for override, text in expected.items():
        with pytest.raises(UserError) as e:
            check_command_line("visual_attack", [override], multirun=False)
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)
