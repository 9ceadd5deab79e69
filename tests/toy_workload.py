"""A workload defined only in the tests: coin flips judged by a model. It plugs into the core
through mmsafety.workload alone (no core edit), as a third-party package would, shows on the
leaderboard through its views (`VIEWS`, a `views:` entry) and ships its own config (tests/toy_conf:
the primary config `toy` and the group `coin`), found through a `conf:` entry."""

from __future__ import annotations

from mmsafety.models.capabilities import SCORE_CHOICES
from mmsafety.leaderboard.views import Figure, ReportedRow, Section, WorkloadViews
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
        """Flip i shows a grey of level 40*i; the model's higher-scored answer of heads/tails is the flip."""
        from PIL import Image

        done = {s["flip"] for s in record.samples}
        for i in range(int(cfg.coin.flips)):
            if str(i) in done:
                continue
            image = Image.new("RGB", (64, 64), (40 * i % 256,) * 3)
            scores = model.choice_logprobs([image], [str(cfg.coin.prompt)], ["heads", "tails"])[0]
            record.add_sample({"flip": str(i), "status": "ok", "heads": int(scores[0] > scores[1])})
        return self.rescore(record.samples, record.data)

    def rescore(self, samples: list[dict], record: dict) -> dict:
        ok = [s for s in samples if s.get("status") == "ok"]
        return {"flips": len(ok), "heads_rate": sum(s["heads"] for s in ok) / len(ok) if ok else None}



def sections() -> list[Section]:
    return [Section(key="coin_flips", title="Coin flips (toy workload)", columns=["model", "status", "flips", "heads_rate"],
                    cells=_cells, figures=_figures)]


def reported_rows() -> list[ReportedRow]:
    return [ReportedRow("a fair coin", "probability theory", {}, {"flips": None, "heads_rate": 0.5})]


WORKLOAD = CoinFlips()  # what the `workload:coin_flips` entry names
VIEWS = WorkloadViews(sections, reported_rows)  # what the `views:coin_flips` entry names
