"""The attack workload's config schemas (registered in Hydra's ConfigStore by the workload) and the
range checks a type cannot express, each a one-line error that names the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from mmsafety.attack_case import OBJECTIVES
from mmsafety.config import ModelConfig, PlacementConfig, pixel_amount
from mmsafety.errors import ConfigError
from visual_attacks.deploy import DeployConfig
from visual_attacks.eot import EOTConfig, check_eot, pair
from visual_attacks.pgd import OPTIMIZERS


class Norm(Enum):
    linf = "linf"
    l2 = "l2"
    none = "none"  # unconstrained: only the [0,1] box


@dataclass
class ObjectiveConfig:
    """`attack.objective`: a registered objective (mmsafety.attack_case.OBJECTIVES) and its own keys,
    one node per objective, picked with `attack/objective=NAME` (conf/attack/objective/NAME.yaml).
    The case (conf/case/) says which objectives it implements. An objective with keys of its own
    subclasses this and registers its schema as `NAME_schema` (OBJECTIVE_SCHEMAS)."""

    name: str = MISSING


@dataclass
class ToolMisuseObjective(ObjectiveConfig):
    """Fu et al.: the model's own clean answer, a newline, then the call."""

    response_weight: float = 0.1      # lambda on the clean-answer tokens
    l2_weight: float = 0.0            # soft penalty on the per-channel L2 distance to the clean image (Fu et al.: 0.05)
    clean_answer_tokens: int = 128    # the model's own clean answer, up to this many tokens


@dataclass
class TargetCorpusObjective(ObjectiveConfig):
    """Qi et al.: a target sentence from a corpus each step."""

    corpus: Optional[str] = None      # a text file, one target sentence a row (required)


@dataclass
class ClipImageEmbedObjective(ObjectiveConfig):
    """M-Attack: move the image's embedding toward a target image's."""

    target_crop_scale: Optional[List[float]] = None  # random crop of the target, kept area [lo, hi] (M-Attack: [0.5, 0.9]); null: whole target


# conf/attack/objective/NAME.yaml names its schema in `defaults:`; objectives without keys of their own use objective_schema.
OBJECTIVE_SCHEMAS: dict[str, type] = {"objective_schema": ObjectiveConfig, "tool_misuse_schema": ToolMisuseObjective,
                                      "target_corpus_schema": TargetCorpusObjective,
                                      "clip_image_embed_schema": ClipImageEmbedObjective}


@dataclass
class AttackConfig:
    name: str = MISSING
    # attack/objective=NAME: target_string | tool_misuse (Fu et al.: clean answer + newline + call) |
    # target_corpus (Qi et al.) | verdict_flip | clip_embed | clip_image_embed, each with its own keys
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(name="target_string"))
    norm: Norm = Norm.linf
    eps: Any = "8/255"        # pixel units in [0,1]; fractions like 8/255 accepted
    step_size: Any = "1/255"
    steps: int = 500
    random_start: bool = False
    restarts: int = 1         # >1: `steps` shared over this many runs from random starts, each image's best kept
    optimizer: str = "sign"   # a name in visual_attacks.pgd.OPTIMIZERS: sign | sgd | adam | apgd
    apgd_alpha: float = 2.0   # optimizer=apgd: the first step is alpha * eps (Croce & Hein: 2); step_size is not read
    apgd_rho: float = 0.75    # optimizer=apgd: halve the step when at most rho of a checkpoint window's steps improved
    prompts_per_step: int = 8
    prompt_weights: Optional[Dict[str, float]] = None  # {prompt set: weight}: Fu et al.'s mix (toolmisuse); null: pool the case's sets
    images_per_batch: int = 8  # base images attacked together in one forward; more are done in chunks
    early_stop_loss: Optional[float] = None  # an image stops (its pixels frozen) once its loss is below this
    early_stop_window: int = 1  # ... at this many early-stop checks in a row
    early_stop_success: bool = False  # an image stops once every validation prompt already gives the target (generates)
    early_stop_every: int = 10  # check the early stop every N steps (each check syncs with the host; 1: every step)
    keep_best: bool = True
    select_every: int = 10    # keep_best on a universal attack: score the iterate on the fixed validation batch every N steps
    quantize: bool = False    # keep iterates on the 8-bit grid a PNG stores
    check_every: int = 0      # every N steps, judge the best images so far on the held-out checks (0: off)
    checkpoint_every: int = 100  # save the attack state every N steps (a killed job resumes from it; 0: off)
    seed: int = 0
    # Ensembles (visual_attacks.surrogates): preset names or {model: PRESET, weight: W, seed: S, ...};
    # empty: craft on model= alone. With surrogates, model= judges and the PNGs are at the canvas size.
    surrogates: List[Any] = field(default_factory=list)
    canvas_max_side: int = 448  # ensembles: the canvas is the base image's size, its longest side capped here
    eot: EOTConfig = field(default_factory=EOTConfig)  # expectation over transformation (eot.samples=0: off)
    # attack=worst_case (visual_attacks.worst_case): the attacks run per image, in order, each
    # {name: LABEL, preset: A conf/attack NAME, KEY: VALUE overrides}; empty: a single attack
    members: List[Any] = field(default_factory=list)


@dataclass
class TargetConfig:
    name: str = MISSING
    kind: str = "function_call"  # a name in visual_attacks.targets.TARGET_KINDS: function_call | expedia | exfiltration
    text: str = MISSING          # {prompt}: the user's own message; {prompt_url}: the same, spaces as %20


@dataclass
class AttackAppConfig:
    model: ModelConfig = MISSING
    attack: AttackConfig = MISSING
    target: TargetConfig = MISSING
    case: Any = MISSING        # what the attack aims at: a conf/case/ entry whose `name` is a registered case
    deploy: DeployConfig = MISSING  # what the saved PNGs go through before the model judges them (conf/deploy/)
    placement: PlacementConfig = MISSING
    images: int = 8            # base images to attack
    heldout_prompts: int = 32  # prompts the attack never saw, per image
    seed: int = 0


def register_schemas(cs) -> None:
    cs.store(name="attack_app_schema", node=AttackAppConfig)
    cs.store(group="attack", name="attack_schema", node=AttackConfig)
    for name, node in OBJECTIVE_SCHEMAS.items():
        cs.store(group="attack/objective", name=name, node=node)
    cs.store(group="target", name="target_schema", node=TargetConfig)


def validate_attack(attack) -> None:
    pixel_amount("attack.eps", attack.eps)
    if pixel_amount("attack.step_size", attack.step_size) == 0:
        raise ConfigError("attack.step_size=0: must be > 0")
    if attack.steps < 0:
        raise ConfigError(f"attack.steps={attack.steps}: must be >= 0")
    if attack.check_every < 0:
        raise ConfigError(f"attack.check_every={attack.check_every}: must be >= 0 (0 turns the checks off)")
    if attack.prompts_per_step < 1:
        raise ConfigError(f"attack.prompts_per_step={attack.prompts_per_step}: must be >= 1")
    check_objective(attack.objective)
    OPTIMIZERS.get(attack.optimizer)  # one line listing the registered optimizers
    if attack.get("checkpoint_every", 0) < 0:
        raise ConfigError(f"attack.checkpoint_every={attack.checkpoint_every}: must be >= 0 (0 turns it off)")
    if attack.get("canvas_max_side", 1) < 1:
        raise ConfigError(f"attack.canvas_max_side={attack.canvas_max_side}: must be >= 1 (pixels, e.g. 448)")
    check_eot(attack.get("eot"))
    if attack.get("apgd_alpha", 1.0) <= 0 or not 0 < attack.get("apgd_rho", 0.75) < 1:
        raise ConfigError(f"attack.apgd_alpha={attack.apgd_alpha}, attack.apgd_rho={attack.apgd_rho}: need alpha > 0 "
                          f"and 0 < rho < 1 (Croce & Hein: 2 and 0.75)")
    if attack.get("restarts", 1) > max(attack.steps, 1):
        raise ConfigError(f"attack.restarts={attack.restarts} is more than attack.steps={attack.steps}: the steps are "
                          f"shared out between the restarts; lower attack.restarts or raise attack.steps")
    for key in ("early_stop_every", "early_stop_window", "select_every", "restarts"):
        if attack.get(key, 1) < 1:
            raise ConfigError(f"attack.{key}={attack[key]}: must be >= 1")


def check_objective(objective) -> None:
    """The objective is registered, and its own keys are in range."""
    OBJECTIVES.get(objective.name)  # one line listing the registered objectives
    if objective.get("clean_answer_tokens", 1) < 1:
        raise ConfigError(f"attack.objective.clean_answer_tokens={objective.clean_answer_tokens}: must be >= 1")
    if objective.get("target_crop_scale") is not None:
        lo, hi = pair("attack.objective.target_crop_scale", objective.target_crop_scale, "[0.5, 0.9]")
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"attack.objective.target_crop_scale=[{lo:g}, {hi:g}]: need 0 < lo <= hi <= 1, e.g. [0.5, 0.9]")
