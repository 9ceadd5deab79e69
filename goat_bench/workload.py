"""GOAT-Bench as a registered workload (key `goat_bench`, the kind of its records): its config
schema and checks, what it needs from a model, how it runs, re-scores and shows on the leaderboard.

Found by the core through the entry `"workload:goat_bench" = "goat_bench.workload"` in the group
`mmsafety.plugins`; the meme-verdict attack case and objective have entries of their own
(goat_bench.verdict_flip), so reading a GOAT record imports no attack code.
"""

from __future__ import annotations

from goat_bench.config import register_schemas
from goat_bench.config_checks import check_eval_ranges
from mmsafety.config import plain, validate_common
from mmsafety.errors import ConfigError
from mmsafety.models.capabilities import GENERATE, SCORE_CHOICES
from mmsafety.record_models import answered
from mmsafety.record_schema import NUMBER, ListOf, MapOf, Required
from mmsafety.workload import WORKLOADS, Workload


class GoatBench(Workload):
    config_name = "eval"
    sample_key = ("task", "id")
    spec_shape = {"tasks": ListOf(str), "synthetic": bool, "root": (str, type(None)), "image_root": (str, type(None)),
                  "scoring": str,
                  "prompt": {"name": str}, "reference_rows": str}
    task_metrics = {"n": int, "skipped": int, "accuracy": NUMBER, "macro_f1": NUMBER, "invalid_rate": NUMBER}
    metrics_shape = {"per_task": MapOf(task_metrics), "overall": task_metrics}
    sample_shapes = {
        "ok": {"task": Required(str), "id": Required(str), "label": Required(int), "pred": Required((int, type(None))),
               "correct": bool},
        "skipped": {"task": Required(str), "id": Required(str), "reason": Required(str)},
    }

    def sample_value_problems(self, sample: dict) -> list[str]:
        if answered(sample) and sample["label"] not in (0, 1):
            return [f"label is {sample['label']}, not 0 or 1"]
        return []

    def register_schemas(self, store) -> None:
        register_schemas(store)

    def validate(self, cfg) -> None:
        # heavy, deferred to when this runs: goat_bench.evaluate loads matplotlib/torch/transformers
        from goat_bench.evaluate import check_task_config

        validate_common(cfg)
        check_eval_ranges(cfg)  # task.limit, synthetic_per_task, max_new_tokens, seeds
        if cfg.batch_size < 1:
            raise ConfigError(f"batch_size={cfg.batch_size}: must be >= 1")
        if (cfg.image_workers or 0) < 0:
            raise ConfigError(f"image_workers={cfg.image_workers}: must be >= 0 (0 loads images in the main loop)")
        check_task_config(cfg.task, plain(cfg.scoring))

    def needs(self, cfg) -> dict[str, frozenset[str]]:
        scoring = plain(cfg.scoring)
        return {f"scoring={scoring}": frozenset({GENERATE if scoring == "generate" else SCORE_CHOICES})}

    def run(self, cfg, model, record, prepared=None, log=print) -> dict:
        # heavy, deferred to when this runs: goat_bench.evaluate loads matplotlib/torch/transformers
        from goat_bench.evaluate import evaluate

        return evaluate(cfg, model, record, log=log)

    def rescore(self, samples: list[dict], record: dict) -> dict:
        # heavy, deferred to when this runs: goat_bench.evaluate loads matplotlib/torch/transformers
        from goat_bench.evaluate import rescore

        return rescore(samples, record)

    def summary(self, metrics: dict) -> str:
        # heavy, deferred to when this runs: goat_bench.evaluate loads matplotlib/torch/transformers
        from goat_bench.evaluate import format_table

        return format_table(metrics)


WORKLOADS.add("goat_bench", GoatBench())
