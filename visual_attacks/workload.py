"""Visual attacks as a registered workload (key `visual_attack`, the kind of its records): config
schemas and checks, what each stage needs from a model, how a job runs (craft, then judge, on one
model), re-scoring and the leaderboard section.

Found by the core through the entry `"workload:visual_attack" = "visual_attacks.workload"` in the group
`mmsafety.plugins`; the tool-call and CLIP-caption cases and their objectives have entries of their
own (visual_attacks.cases).
"""

from __future__ import annotations

from mmsafety.attack_case import CASES, OBJECTIVES
from mmsafety.config import validate_common
from mmsafety.record_schema import NUMBER, OPTIONAL_NUMBER, ListOf, MapOf, Required
from mmsafety.workload import WORKLOADS, Workload
from visual_attacks.config_checks import check_attack_config
from visual_attacks.deploy import register_schema, build_deploy
from visual_attacks.report import format_attack_table
from visual_attacks.summary import rescore


class VisualAttack(Workload):
    config_name = "attack"
    sample_key = ("image",)
    spec_shape = {"group_by": ListOf(str), "eps": OPTIONAL_NUMBER, "steps": OPTIONAL_NUMBER, "headline": str,
                  "case": str, "target": (str, type(None)), "caption": str, "attack": (str, type(None)),
                  "objective": (str, type(None)), "norm": (str, type(None)),
                  "surrogates": ListOf(str), "surrogate_weights": ListOf(NUMBER), "eot": (str, type(None))}
    metrics_shape = {"images": int, "asr": MapOf(OPTIONAL_NUMBER), "clean_baseline": MapOf(OPTIONAL_NUMBER),
                     "stealth": MapOf(OPTIONAL_NUMBER), "attack_seconds": NUMBER}
    sample_shapes = {
        "ok": {"image": Required(int), "clean_png": Required(str), "adversarial_png": Required(str),
               "steps_run": Required(int), "attack_seconds": Required(NUMBER), "stealth": Required(MapOf(OPTIONAL_NUMBER)),
               "clean": Required(MapOf(OPTIONAL_NUMBER)), "adversarial": Required(MapOf(OPTIONAL_NUMBER)),
               "utility": (dict, type(None)), "base": dict},
        "skipped": {"image": Required(int), "reason": Required(str)},
    }

    def register_schemas(self, store) -> None:
        # heavy, deferred to when this runs: visual_attacks.config loads torch
        from visual_attacks.config import register_schemas

        register_schemas(store)
        register_schema(store)

    def validate(self, cfg):
        """Everything that can be checked without a model, so a sweep fails before its first job.
        Returns the case, built once (its targets and prompt sets; no images are drawn yet)."""
        # heavy, deferred to when this runs: visual_attacks.config loads torch, visual_attacks.run loads matplotlib/torch/transformers, visual_attacks.surrogates loads torch
        from visual_attacks.config import validate_attack
        from visual_attacks.run import build_case
        from visual_attacks.surrogates import check_surrogates, surrogate_specs

        validate_common(cfg)
        validate_attack(cfg.attack)
        check_attack_config(cfg)  # images, heldout_prompts, images_per_batch, L-inf budget
        build_deploy(cfg.deploy)  # step kinds and parameters
        case = build_case(cfg)
        check_surrogates(surrogate_specs(cfg.attack), OBJECTIVES.get(cfg.attack.objective.name).needs,
                         f"visual_attack with the craft stage (attack/objective={cfg.attack.objective.name})")
        return case

    def needs(self, cfg) -> dict[str, frozenset[str]]:
        # With attack.surrogates they craft (validate checks them) and model= only judges.
        craft = set() if cfg.attack.get("surrogates") else set(OBJECTIVES.get(cfg.attack.objective.name).needs)
        judge = CASES.get(cfg.case.name).judge_needs
        if cfg.attack.check_every:
            craft |= judge  # the held-out checks judge on the crafting model
        return {f"the craft stage (attack/objective={cfg.attack.objective.name})": frozenset(craft),
                f"the judge stage (case={cfg.case.name})": judge}

    def run(self, cfg, model, record, prepared=None, log=print) -> dict:
        # heavy, deferred to when this runs: visual_attacks.run loads matplotlib/torch/transformers
        from visual_attacks.run import run_attack

        return run_attack(cfg, model, record, log=log, case=prepared)

    def rescore(self, samples: list[dict], record: dict) -> dict:
        return rescore(samples, record)

    def summary(self, metrics: dict) -> str:
        return format_attack_table(metrics)

    def data_source(self, spec: dict) -> str:
        """A case says whether its base images were generated (the meme case's `synthetic`); the
        tool-call and CLIP-caption cases always attack generated scenes (visual_attacks.cases.scene_bases)."""
        if isinstance(spec.get("synthetic"), bool):
            return super().data_source(spec)
        return "synthetic" if spec.get("case", "tool_call") in ("tool_call", "clip_caption") else ""


WORKLOADS.add("visual_attack", VisualAttack())
