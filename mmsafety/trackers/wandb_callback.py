"""`+callbacks=wandb`: each job becomes a Weights & Biases run (needs `pip install "mmsafety[wandb]"`).

A run holds the record's config, its metrics (logged once, so they are also the run's summary), the
samples as a table, and the samples' PNGs and the loss curve as an artifact; a sweep's jobs share a group
named after the sweep folder. `mode: offline` writes the run files under `dir` for `wandb sync` later.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from mmsafety.trackers.callback import TrackerCallback, require_extra
from mmsafety.trackers.job import JobRun


def artifact_name(text: str) -> str:
    """W&B artifact names take letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:128]


class WandbCallback(TrackerCallback):
    name = "wandb"

    def __init__(self, project: str = "mmsafety", entity: str | None = None, mode: str | None = None,
                 dir: str | None = None, tags: Sequence[str] = (), group: str | None = None) -> None:
        require_extra("wandb", "wandb")
        self.project, self.entity, self.mode, self.dir = project, entity, mode, dir
        self.tags, self.group = list(tags or ()), group

    def log_job(self, run: JobRun, sweep_dir: Path | None) -> None:
        import wandb  # the optional extra: imported only when a job is logged

        record = run.record
        wb = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                        dir=str(self.dir or run.folder), name=run.name, job_type=str(record.get("kind")),
                        group=self.group or (sweep_dir.name if sweep_dir else None), config=run.config,
                        tags=[*self.tags, str(record.get("kind")), str(record.get("status"))],
                        reinit="create_new", settings=wandb.Settings(quiet=True))
        try:
            columns, rows = run.sample_rows()
            wb.log({**run.metrics, **({"samples": wandb.Table(columns=columns, data=rows)} if rows else {})})
            files = run.files()
            if files:
                artifact = wandb.Artifact(artifact_name(f"{run.name}-files"), type="run-files",
                                          metadata={"run_folder": str(run.folder)})
                for rel, path in files.items():
                    artifact.add_file(str(path), name=rel)
                wb.log_artifact(artifact)
        finally:
            wb.finish(exit_code=0 if record.get("status") == "completed" else 1)
