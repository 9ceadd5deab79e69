"""Hydra callback: after a sweep (`-m`), write the leaderboard into the sweep folder."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mmsafety.leaderboard.export import write_leaderboard


class LeaderboardCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        try:
            summary = write_leaderboard([sweep_dir], sweep_dir)
        except Exception as e:  # the jobs' records are safe on disk; the leaderboard can be rebuilt
            print(f"warning: leaderboard not written ({type(e).__name__}: {e}); "
                  f"rebuild it with: mmsafety-leaderboard {sweep_dir} --out {sweep_dir}", file=sys.stderr)
            return
        print(f"leaderboard: {summary['out']}/leaderboard.html", file=sys.stderr)
