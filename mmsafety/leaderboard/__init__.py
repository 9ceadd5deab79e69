"""Leaderboards from run records: `write_leaderboard(paths, out)` or `mmsafety-leaderboard PATH... --out DIR`."""

from mmsafety.leaderboard.export import write_leaderboard

__all__ = ["write_leaderboard"]
