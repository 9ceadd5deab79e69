"""A workload defined only in the tests: coin flips judged by a model. It plugs into the core
through mmsafety.workload alone (no core edit), as a third-party package would."""

from __future__ import annotations

from mmsafety.models.capabilities import SCORE_CHOICES
from mmsafety.leaderboard.views import Figure, ReportedRow, Section
from mmsafety.workload import Workload


def _cells(row) -> dict:
    return {"model": row.model, "status": row.status, "flips": row.metrics.get("flips"),
            "heads_rate": row.metrics.get("heads_rate"), "note": row.source if row.reported else row.note}


def _figures(rows, table) -> list[Figure]:
    return [Figure("toy_heads", "Heads per model", b"\x89PNG\r\n\x1a\n not really a plot")] if table else []


class CoinFlips(Workload):
    config_name = "toy"
    sample_key = ("flip",)

    def needs(self, cfg):
        return {"the coin judge": frozenset({SCORE_CHOICES})}

    def run(self, cfg, model, record, prepared=None, log=print) -> dict:
        raise NotImplementedError("the leaderboard test writes the records itself")

    def rescore(self, samples: list[dict], record: dict) -> dict:
        ok = [s for s in samples if s.get("status") == "ok"]
        return {"flips": len(ok), "heads_rate": sum(s["heads"] for s in ok) / len(ok) if ok else None}

    def sections(self) -> list[Section]:
        return [Section(key="coin_flips", title="Coin flips (toy workload)", columns=["model", "status", "flips", "heads_rate"],
                        cells=_cells, figures=_figures)]

    def reported_rows(self) -> list[ReportedRow]:
        return [ReportedRow("a fair coin", "probability theory", {}, {"flips": None, "heads_rate": 0.5})]
