"""`+callbacks=mlflow`: each job becomes an MLflow run (needs `pip install "mmsafety[mlflow]"`).

A run holds the record's config (flattened as params, and whole as `config.json`), its metrics, the samples
as a table (`samples.json`), and the samples' PNGs and the loss curve as artifacts. A sweep gets a parent
run, and its jobs are nested under it: the parent's id is kept in the sweep folder (`.mlflow_parent_run`),
so jobs that run elsewhere (SLURM) find it too. `tracking_uri: null` is MLflow's own default
(MLFLOW_TRACKING_URI, else ./mlruns); a local store: `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import fcntl
import re
import time
from pathlib import Path

from mmsafety.trackers.callback import TrackerCallback, require_extra
from mmsafety.trackers.job import JobRun, flatten

PARENT_FILE = ".mlflow_parent_run"
MAX_PARAM = 6000  # MLflow's limit on a param value's length; the whole config is also config.json


def metric_key(key: str) -> str:
    """MLflow keys take letters, digits, `_ - . /` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", key)


class MlflowCallback(TrackerCallback):
    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str = "mmsafety") -> None:
        require_extra("mlflow", "mlflow")
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def client(self):
        from mlflow import MlflowClient  # the optional extra

        return MlflowClient(self.tracking_uri)

    def experiment_id(self, client) -> str:
        found = client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found else client.create_experiment(self.experiment)

    def parent_run_id(self, client, sweep_dir: Path) -> str:
        """The sweep's parent run, created by whichever process asks first (under a file lock)."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / f"{PARENT_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = sweep_dir / PARENT_FILE
            if path.exists() and path.read_text().strip():
                return path.read_text().strip()
            run = client.create_run(self.experiment_id(client), run_name=sweep_dir.name,
                                    tags={"mmsafety.sweep_dir": str(sweep_dir)})
            path.write_text(run.info.run_id + "\n")
            return run.info.run_id

    def start_sweep(self, sweep_dir: Path) -> None:
        self.parent_run_id(self.client(), sweep_dir)

    def end_sweep(self, sweep_dir: Path) -> None:
        client = self.client()
        client.set_terminated(self.parent_run_id(client, sweep_dir), "FINISHED")

    def log_job(self, run: JobRun, sweep_dir: Path | None) -> None:
        # optional dependency: mlflow (the mlflow extra)
        from mlflow.entities import Metric, Param

        client = self.client()
        record = run.record
        tags = {"mmsafety.kind": str(record.get("kind")), "mmsafety.status": str(record.get("status")),
                "mmsafety.run_folder": str(run.folder)}
        if sweep_dir is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id(client, sweep_dir)
        run_id = client.create_run(self.experiment_id(client), run_name=run.name, tags=tags).info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(metric_key(k), str(v)[:MAX_PARAM]) for k, v in flatten(run.config).items()]
            metrics = [Metric(metric_key(k), v, now, 0) for k, v in run.metrics.items()]
            for i in range(0, len(params), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
                client.log_batch(run_id, params=params[i:i + 100])
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i:i + 1000])
            client.log_dict(run_id, run.config, "config.json")
            columns, rows = run.sample_rows()
            if rows:
                client.log_table(run_id, {c: [r[j] for r in rows] for j, c in enumerate(columns)}, "samples.json")
            for rel, path in run.files().items():
                parent = str(Path(rel).parent)
                client.log_artifact(run_id, str(path), None if parent == "." else parent)
        finally:
            client.set_terminated(run_id, "FINISHED" if record.get("status") == "completed" else "FAILED")
