"""Quiet, truthful job-state polling for sweeps under the SLURM launcher.

submitit polls `sacct`; on a cluster without accounting storage every poll fails and prints a three-line
warning for the life of the sweep. This watcher asks `sacct` when the cluster keeps accounting and
otherwise reads `scontrol show job` (slurmctld keeps a finished job for `MinJobAge`, 300 s by default),
in sacct's own format, and prints one line per job state change (submitted, running, requeued, done,
failed) instead of warnings."""

from __future__ import annotations

import re
import subprocess
import sys

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

FIELDS = "JobID|State|NodeList"
POLL_EVERY_S = 60
GONE = "NOT_FOUND"  # the state of a job the controller no longer knows (no accounting to ask)


def job_states(job_ids: list[str]) -> str:
    """sacct's `JobID|State|NodeList` table for these jobs, from sacct or, without accounting, scontrol."""
    sacct = subprocess.run(["sacct", "-o", FIELDS.replace("|", ","), "--parsable2", *[a for j in job_ids for a in ("-j", j)]],
                           capture_output=True, text=True)
    if sacct.returncode == 0:
        return sacct.stdout
    lines = [FIELDS]
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
        if shown.returncode and re.search(r"not found|Invalid job id", shown.stdout + shown.stderr):
            # Purged: cancelled before it started (a pending array task), or ended more than MinJobAge
            # ago. A state submitit counts as ended: its result file, if any, says how.
            lines.append(f"{job_id}|{GONE}|")
            continue
        for line in shown.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            state = fields.get("JobState", "UNKNOWN")
            if state == "PENDING" and int(fields.get("Restarts", "0") or 0) > 0:
                state = "REQUEUED"  # what sacct calls a requeued job waiting to start again
            task = fields.get("ArrayTaskId")
            name = f"{fields['ArrayJobId']}_{task if task.isdigit() else '[' + task + ']'}" if task else fields.get("JobId", job_id)
            lines.append(f"{name}|{state}|{fields.get('NodeList', '')}")
    return "\n".join(lines) + "\n"


class QuietSlurmWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int = 60, out=sys.stderr) -> None:
        super().__init__(delay_s=delay_s)
        self._seen: dict[str, str] = {}
        self._out = out

    def _make_command(self):
        # Each array task by its own id (submitit asks for the array's id, which scontrol answers with
        # the tasks it still knows: a pending task cancelled before it was split off would never show).
        job_ids = sorted(self._registered - self._finished)
        if not job_ids:
            return None
        return [sys.executable, "-c", "import sys; from mmsafety.cli.slurm_watch import job_states; "
                "print(job_states(sys.argv[1:]), end='')", *job_ids]

    def read_info(self, string):
        info = super().read_info(string)
        for job_id in sorted(info, key=lambda j: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", j)]):
            if "[" in job_id:
                continue
            state = info[job_id].get("State", "UNKNOWN").split()[0]
            if self._seen.get(job_id) != state:
                self._seen[job_id] = state
                print(f"slurm: job {job_id} {state.lower().replace('_', ' ')}", file=self._out, flush=True)
        return info


def install() -> None:
    """Make submitit's SLURM jobs in this process poll through QuietSlurmWatcher (once)."""
    if not isinstance(SlurmJob.watcher, QuietSlurmWatcher):
        # Polls at 0, 2, 4, 8, ... s after the last submission, then every minute (submitit's default
        # backs off to every 10 minutes: a job's end, or its cancellation, would be seen that late).
        SlurmJob.watcher = QuietSlurmWatcher(delay_s=POLL_EVERY_S)
