"""Transfer as a registered workload (key `transfer`, the kind of its records; `mmsafety-judge`):
judge the PNGs an earlier attack run saved with another model (the victim), after a deploy
transform, on the source run's own held-out checks, with the victim's clean baseline.

One job judges one attack job folder and writes one record: one cell of the transfer matrix
(surrogate x victim x deploy, per case, target and budget). A sweep folder given as `attack_run`
becomes one job per attack job under it (visual_attacks.cli expands it into a Hydra sweep), so
resume, sweeps and the leaderboard treat every cell alike.

Found by the core through the entry `"workload:transfer" = "visual_attacks.transfer"` in the group
`mmsafety.plugins`.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from pathlib import Path
import re

from omegaconf import MISSING, OmegaConf

from mmsafety.attack_case import CASES, AttackCase, build_case
from mmsafety.config import ModelConfig, PlacementConfig, validate_common
from mmsafety.errors import ConfigError, UserError
from mmsafety.record_schema import NUMBER, OPTIONAL_NUMBER, ListOf, MapOf
from mmsafety.safe_json import loads_object
from mmsafety.workload import WORKLOADS, Workload
from visual_attacks.deploy import Deploy, DeployConfig, build_deploy
from visual_attacks.deploy import register_schema as register_deploy_schema
from visual_attacks.png_names import read_verified_png
from visual_attacks.summary import rescore
from visual_attacks.workload import VisualAttack

# Spec fields of the source attack record that say what was crafted (copied into the transfer record).
CRAFT_FIELDS = ("case", "target", "target_text", "caption", "attack", "objective", "norm", "eps", "step_size", "steps",
                "prompts_per_step", "images", "heldout_prompts", "headline", "group_by", "surrogate_weights", "eot",
                "synthetic")


@dataclass
class JudgeAppConfig:
    model: ModelConfig = MISSING
    placement: PlacementConfig = MISSING
    deploy: DeployConfig = MISSING
    attack_run: str = MISSING  # an attack job folder, or a sweep folder (one job per attack job under it)
    seed: int = 0


def model_display_name(model: dict) -> str:
    """How a model is labelled in a transfer matrix: a built model with its builder seed
    (`organism (seed 2)`: seeds are different models), any other by its preset's name."""
    name = str(model.get("name", "?"))
    return f"{name} (seed {model.get('seed', 0)})" if model.get("builder") else name


def attack_run_tag(path) -> str:
    """A folder-safe tag of an attack run path for output folder names: its last component and a
    short hash of the absolute path (two runs with the same last component differ)."""
    resolved = Path(str(path)).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", resolved.name).strip("-")[:60] or "run"
    return f"{stem}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def _kind_of(record_path: Path) -> str | None:
    try:
        return loads_object(record_path.read_bytes()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def attack_runs_under(path) -> list[Path]:
    """The attack job folders `path` names: itself when it holds a record, else every folder under it
    whose record is an attack run's (a sweep folder), sorted; [] when there is none."""
    folder = Path(str(path)).expanduser().resolve()
    if (folder / "record.json").is_file() or not folder.is_dir():
        return [folder]
    runs = {p.parent for p in folder.rglob("record.json") if _kind_of(p) == "visual_attack"}
    # A record inside another attack run (e.g. mmsafety-harmbench-judge's judged-<judge>/) re-labels that
    # run's images: it is not an attack job of the sweep.
    return sorted(run for run in runs if not any(parent in runs for parent in run.parents))


@dataclass
class Prepared:
    """What validating a judge job built: the source run, its case, the deploy transform."""

    source: Path
    source_record: dict
    crafted: list[dict]
    case: AttackCase
    deploy: Deploy


def surrogates_of(source_record: dict) -> list[str]:
    """The models the source attack was crafted on: its spec's `surrogates` (an ensemble writes
    their display names), else the one model it ran on."""
    named = source_record.get("spec", {}).get("surrogates")
    if isinstance(named, list) and named and all(isinstance(n, str) for n in named):
        return named
    return [model_display_name(source_record.get("config", {}).get("model", {}) or source_record.get("model", {}))]


def transfer_spec(prepared: Prepared, victim: str) -> dict:
    source_spec = prepared.source_record.get("spec", {})
    return {"workload": "transfer", "stage": "judge", "source_run": str(prepared.source),
            "source_run_id": prepared.source_record.get("run_id"), "source_status": prepared.source_record.get("status"),
            "source_model": prepared.source_record.get("model", {}), "surrogates": surrogates_of(prepared.source_record),
            "victim": victim, "deploy": prepared.deploy.spec(),
            **{k: source_spec[k] for k in CRAFT_FIELDS if k in source_spec},
            "sample_key": ["image"]}


def prepare(cfg) -> Prepared:
    """Every check that needs no model: the attack run is one attack job folder whose PNGs are all
    there and unmodified, its case can be rebuilt, the deploy transform is valid."""
    if OmegaConf.is_missing(cfg, "attack_run") or not str(cfg.attack_run).strip():
        raise ConfigError("attack_run is not set: pass attack_run=PATH, the folder mmsafety-attack wrote "
                          "(or a sweep folder: each attack job under it is judged)")
    # The judge stage pulls in torch and the model stack: imported when a transfer job is prepared,
    # never when the leaderboard reads transfer records through this workload.
    from visual_attacks.judge import read_source_run, saved_pngs

    deploy = build_deploy(cfg.deploy)
    runs = attack_runs_under(cfg.attack_run)
    if not runs:
        raise UserError(f"attack_run={cfg.attack_run}: not an attack run (no record.json of mmsafety-attack "
                        f"in it or under it); point it at the folder mmsafety-attack wrote")
    if len(runs) > 1 or runs[0] != Path(str(cfg.attack_run)).expanduser().resolve():
        raise UserError(f"attack_run={cfg.attack_run} is a sweep folder holding {len(runs)} attack run(s); judge "
                        f"each as its own job: mmsafety-judge attack_run={cfg.attack_run} (the command line "
                        f"expands it), or visual_attacks.cli.run_judge_jobs from Python")
    source, source_record, crafted = read_source_run(runs[0])
    for sample in crafted:  # refuse modified images before any model loads
        for png in saved_pngs(source, sample):
            read_verified_png(png)
    case = build_case(source_record["config"]["case"])
    return Prepared(source, source_record, crafted, case, deploy)


class TransferJudge(Workload):
    config_name = "judge"
    sample_key = ("image",)
    spec_shape = {"group_by": ListOf(str), "eps": OPTIONAL_NUMBER, "steps": OPTIONAL_NUMBER, "headline": str,
                  "case": str, "target": (str, type(None)), "caption": str, "source_run": str,
                  "surrogates": ListOf(str), "victim": str, "deploy": {"name": str, "steps": ListOf(dict)}}
    metrics_shape = {"images": int, "asr": MapOf(OPTIONAL_NUMBER), "clean_baseline": MapOf(OPTIONAL_NUMBER),
                     "stealth": MapOf(OPTIONAL_NUMBER), "attack_seconds": NUMBER}

    # An attack sample's fields, plus the source run it came from.
    sample_shapes = {status: {**shape, "source_run": str} for status, shape in VisualAttack.sample_shapes.items()}

    def register_schemas(self, store) -> None:
        store.store(name="judge_app_schema", node=JudgeAppConfig)
        register_deploy_schema(store)
        if not OmegaConf.has_resolver("attack_run_tag"):  # conf/judge.yaml's folder names
            OmegaConf.register_new_resolver("attack_run_tag", attack_run_tag)

    def validate(self, cfg) -> Prepared:
        validate_common(cfg)
        return prepare(cfg)

    def needs(self, cfg) -> dict[str, frozenset[str]]:
        """What the victim needs to judge the source run's case (read from its record, so a victim that
        cannot judge it is refused in one line before it loads)."""
        try:
            case_name = loads_object((Path(str(cfg.attack_run)).expanduser() / "record.json").read_bytes())["config"]["case"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # validate has already refused such a folder
        return {f"the judge stage (case={case_name} of attack_run)": CASES.get(case_name).judge_needs}

    def run(self, cfg, model, record, prepared: Prepared | None = None, log=print) -> dict:
        prepared = prepared if prepared is not None else prepare(cfg)
        victim = model_display_name(OmegaConf.to_container(cfg.model, resolve=True))
        record.update(spec=transfer_spec(prepared, victim))
        from visual_attacks.judge import judge_saved_attack  # torch and the model stack: only when a job runs

        return judge_saved_attack(prepared.source, model, record, log=log, model_name=victim, deploy=prepared.deploy)

    def rescore(self, samples: list[dict], record: dict) -> dict:
        return rescore(samples, record)

    def summary(self, metrics: dict) -> str:
        from visual_attacks.report import format_attack_table  # percent, one decimal: the rule of every summary

        return format_attack_table(metrics)

    def data_source(self, spec: dict) -> str:
        """Where the judged images came from: the source attack's data source (its spec fields are copied)."""
        source = getattr(WORKLOADS.get("visual_attack"), "data_source", None)
        return source(spec) if source is not None else ""


WORKLOADS.add("transfer", TransferJudge())

