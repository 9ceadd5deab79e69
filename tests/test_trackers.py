"""Experiment trackers (`+callbacks=wandb`, `+callbacks=mlflow`), for real and offline: W&B in offline mode (its
run file is read back record by record), MLflow with a local SQLite store (read back through its client). What
they hold must equal the job's record: its config, its metrics, its samples and its files.

wandb and mlflow are optional extras for users (mmsafety[wandb], mmsafety[mlflow]) and in the test extra, so
`make test` runs these; where they are absent, the tests skip, saying so."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mmsafety.trackers.job import JobRun, flatten, numeric, per_behavior
from tests.helpers import cli_command

ATTACK = ["model=tiny_llava", "attack.steps=2", "images=2", "heldout_prompts=1"]


def record_metrics(folder: Path) -> dict[str, float]:
    """The numbers of a record, computed here from the files (independently of JobRun)."""
    record = json.loads((folder / "record.json").read_text())
    out = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}/{k}" if prefix else k)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    walk(record["metrics"], "")
    walk({"counts": record["counts"]}, "")
    return out


# -- what a job's folder gives a tracker (no tracker library needed) ------------------------------------

def test_job_run_reads_a_records_metrics_samples_and_files_inside_its_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"png")
    (tmp_path / "loss_curve.csv").write_text("step,loss\n0,1\n")
    (tmp_path.parent / "secret.png").write_bytes(b"x")
    record = {"kind": "visual_attack", "status": "completed", "config": {"seed": 3, "attack": {"eps": 0.1}},
              "metrics": {"asr": {"syntax": 0.5, "exact": None}, "stealth": {"psnr": float("inf"), "ssim": 0.9},
                          "flag": True, "images": 2},
              "counts": {"ok": 2, "skipped": 0, "errors": 0},
              "artifacts": {"loss_curve": {"csv": "loss_curve.csv", "png": "missing.png"}}}
    (tmp_path / "record.json").write_text(json.dumps(record))
    samples = [{"status": "ok", "image": 0, "adversarial_png": "images/a.png", "clean_png": "../secret.png",
                "base": {"behavior_id": "b1"}, "adversarial": {"syntax": 1.0}},
               {"status": "ok", "image": 1, "adversarial_png": "/etc/passwd", "base": {"behavior_id": "b2"},
                "adversarial": {"syntax": 0.0}, "note": 5}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples) + '{"torn": ')
    run = JobRun.read(tmp_path)
    assert run.config == record["config"]
    # None, inf and bools are not logged; counts and per-behaviour results are.
    assert run.metrics == {"asr/syntax": 0.5, "stealth/ssim": 0.9, "images": 2.0, "counts/ok": 2.0, "counts/skipped": 0.0,
                           "counts/errors": 0.0, "per_behavior/b1/syntax": 1.0, "per_behavior/b2/syntax": 0.0}
    columns, rows = run.sample_rows()
    assert len(rows) == 2 and "base/behavior_id" in columns and rows[1][columns.index("note")] == 5
    assert rows[0][columns.index("note")] is None
    # Only files inside the run folder that exist: not ../secret.png, /etc/passwd or a missing loss-curve PNG.
    assert set(run.files()) == {"images/a.png", "loss_curve.csv"}


def test_job_run_of_a_folder_without_a_readable_record_is_none(tmp_path):
    assert JobRun.read(tmp_path) is None
    (tmp_path / "record.json").write_text("[1, 2]")
    assert JobRun.read(tmp_path) is None


def test_flatten_and_numeric_and_per_behavior_against_hand_values():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a/b": 1, "a/c/d": [1, 2], "e": "x"}
    assert numeric({"a": 1, "b": True, "c": float("nan"), "d": "1", "e": 2.5}) == {"a": 1.0, "e": 2.5}
    assert per_behavior([{"status": "error", "base": {"behavior_id": "x"}, "adversarial": {"s": 1}},
                         {"base": {"behavior_id": "y"}, "adversarial": {"s": 1, "t": None}}]) == {"per_behavior/y/s": 1.0}


def test_a_missing_extra_is_one_line_and_no_job_runs(tmp_path):
    code = "import sys; sys.modules['wandb'] = None\n" + cli_command("mmsafety-eval")[-1]
    proc = subprocess.run([sys.executable, "-c", code, "model=tiny_llava", "task.limit=1", "+callbacks=wandb",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ['error: +callbacks=wandb needs the wandb package: pip install "mmsafety[wandb]"'], proc.stderr
    assert not (tmp_path / "run" / "record.json").exists()


# -- W&B, offline: read its run file back --------------------------------------------------------------

def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (`run-<id>.wandb`): a 7-byte header (":W&B", magic,
    version), then LevelDB-log records in 32 KiB blocks (checksum, length, type; FULL / FIRST-MIDDLE-LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buffer = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer or zero padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buffer = chunk if kind in (1, 2) else buffer + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buffer)
            yield record


def wandb_run(run_dir: Path) -> dict:
    """What an offline W&B run holds: config, the logged metrics, group, job type, artifacts and exit code."""
    out = {"config": {}, "history": {}, "artifacts": {}, "exit": None}
    for r in wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name)
            out["config"] = {i.key: json.loads(i.value_json) for i in r.run.config.update if i.key != "_wandb"}
        elif kind == "history":
            out["history"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"][r.artifact.name] = {m.path: m.digest for m in r.artifact.manifest.contents}
        elif kind == "exit":
            out["exit"] = r.exit.exit_code
    return out


@pytest.mark.slow  # two attack jobs on the tiny LLaVA through the console script, and W&B's service (~1-2 min)
def test_wandb_offline_sweep_holds_each_records_config_metrics_samples_and_files(tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'mmsafety[wandb]')")
    sweep = tmp_path / "sweep"
    proc = subprocess.run([*cli_command("mmsafety-attack"), "-m", *ATTACK, "seed=0,1", "+callbacks=wandb",
                           "hydra.callbacks.wandb.mode=offline", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**__import__("os").environ, "HYDRA_FULL_ERROR": "0", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/record.json"))
    assert len(jobs) == 2
    for job in jobs:
        run_dirs = list((job / "wandb").glob("offline-run-*"))
        assert len(run_dirs) == 1, run_dirs
        logged = wandb_run(run_dirs[0])
        record = json.loads((job / "record.json").read_text())
        assert logged["config"] == record["config"]
        assert logged["group"] == sweep.name and logged["job_type"] == "visual_attack" and logged["exit"] == 0
        metrics = {k: v for k, v in logged["history"].items() if not k.startswith(("_", "samples"))}
        assert metrics == pytest.approx(record_metrics(job))
        assert logged["history"]["samples/nrows"] == 2  # the samples table: one row per attacked image
        files = next(iter(logged["artifacts"][a] for a in logged["artifacts"] if a.endswith("-files")))
        samples = [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]
        expected = {s[k] for s in samples for k in ("clean_png", "adversarial_png")} | {"loss_curve.csv", "loss_curve.png"}
        assert set(files) == expected


# -- MLflow, a local SQLite store: read back through its client -----------------------------------------

@pytest.mark.slow  # two GOAT-Bench jobs and two attack jobs through the console scripts (~2 min)
def test_mlflow_sqlite_sweep_nests_jobs_under_a_parent_with_each_records_config_and_metrics(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'mmsafety[mlflow]')")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = tmp_path / "sweep"
    proc = subprocess.run([*cli_command("mmsafety-attack"), "-m", *ATTACK, "seed=0,1", "+callbacks=mlflow",
                           f"hydra.callbacks.mlflow.tracking_uri={uri}", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**__import__("os").environ, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mmsafety")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs.pop(sweep.name)
    assert parent.info.status == "FINISHED"
    jobs = sorted(p.parent for p in sweep.glob("*/record.json"))
    assert sorted(runs) == [j.name for j in jobs]
    for job in jobs:
        run, record = runs[job.name], json.loads((job / "record.json").read_text())
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert run.data.metrics == pytest.approx(record_metrics(job))
        assert json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text()) \
            == record["config"]
        assert run.data.params["seed"] == str(record["config"]["seed"])
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "samples.json", str(tmp_path))).read_text())
        assert len(table["data"]) == 2
        images = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
        samples = [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]
        assert images == {s[k] for s in samples for k in ("clean_png", "adversarial_png")}
        assert {"loss_curve.csv", "loss_curve.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
