"""Typed schemas for the Hydra configs, registered in Hydra's ConfigStore.

The schemas make Hydra reject unknown keys and wrong types; `validate_*` adds the range
checks a type cannot express. Both report one line that names the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mmsafety.errors import ConfigError


class DType(Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Scoring(Enum):
    logprob = "logprob"    # Yes vs No scored without generating (choice_logprobs)
    generate = "generate"  # the paper's protocol: greedy text, then the answer parser


class Norm(Enum):
    linf = "linf"
    l2 = "l2"
    none = "none"  # unconstrained: only the [0,1] box


@dataclass
class ModelConfig:
    name: str = MISSING                 # display name in records and leaderboards
    adapter: str = MISSING              # a registered adapter: llava, open_clip, ...
    name_or_path: Optional[str] = None  # hub id (found in the HF cache) or a local folder
    builder: Optional[str] = None       # or build offline: tiny_llava | organism | tiny_open_clip
    seed: int = 0                       # builder seed
    allow_pickle: bool = False
    trust_remote_code: bool = False
    revision: Optional[str] = None
    local_files_only: bool = False


@dataclass
class PlacementConfig:
    name: str = "cpu"
    device: Optional[str] = "cpu"
    device_map: Optional[str] = None
    dtype: DType = DType.float32
    gpus: int = 0  # GPUs a cluster job asks for (hydra/launcher=slurm reads it)
    gradient_checkpointing: bool = False  # attacks: recompute each layer in the backward (less memory, slower)
    compile: bool = False  # torch.compile the language model: faster steps after a compile of tens of seconds


@dataclass
class TaskConfig:
    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # GOAT-Bench task names
    root: Optional[str] = None      # dataset root; null: the synthetic sample built offline
    synthetic_per_task: int = 100   # size of that sample
    limit: Optional[int] = None     # at most this many memes per task (quick looks)
    prompt: str = "paper"           # prompt template: paper | cot


@dataclass
class AttackConfig:
    name: str = MISSING
    # target_string | tool_misuse (Fu et al.: clean answer + newline + call) | verdict_flip | clip_embed;
    # the case (conf/case/) says which of these it implements
    objective: str = "target_string"
    response_weight: float = 0.1      # tool_misuse: lambda on the clean-answer tokens
    l2_weight: float = 0.0            # tool_misuse: soft penalty on the per-channel L2 distance to the clean image
    norm: Norm = Norm.linf
    eps: Any = "8/255"        # pixel units in [0,1]; fractions like 8/255 accepted
    step_size: Any = "1/255"
    steps: int = 500
    random_start: bool = False
    optimizer: str = "sign"   # a name in visual_attacks.pgd.OPTIMIZERS: sign | sgd | adam
    prompts_per_step: int = 8
    early_stop_loss: Optional[float] = None
    early_stop_every: int = 10  # check the early stop every N steps (each check syncs with the host)
    keep_best: bool = True
    select_every: int = 10    # keep_best on a universal attack: score the iterate on the fixed validation batch every N steps
    clean_answer_tokens: int = 128  # tool_misuse: the model's own clean answer, up to this many tokens (Fu et al.)
    target_corpus: Optional[str] = None  # target_corpus: a text file, one target sentence a row (Qi et al.)
    quantize: bool = False    # keep iterates on the 8-bit grid a PNG stores
    check_every: int = 0      # every N steps, judge the best images so far on the held-out checks (0: off)
    checkpoint_every: int = 100  # save the attack state every N steps (a killed job resumes from it; 0: off)
    seed: int = 0


@dataclass
class TargetConfig:
    name: str = MISSING
    kind: str = "function_call"  # a name in visual_attacks.targets.TARGET_KINDS: function_call | expedia | exfiltration
    text: str = MISSING          # {prompt}: the user's own message; {prompt_url}: the same, spaces as %20


@dataclass
class EvalConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    placement: PlacementConfig = MISSING
    scoring: Scoring = Scoring.logprob
    batch_size: int = 16
    max_new_tokens: Optional[int] = None  # null: the template's (16 for the paper's prompt)
    image_workers: Optional[int] = None   # threads decoding images ahead; null: 4 on a GPU, 0 on the CPU
    shard: int = 0         # this job's share of the memes: shard i of num_shards, split by a hash of (task, id)
    num_shards: int = 1
    seed: int = 0


@dataclass
class AttackAppConfig:
    model: ModelConfig = MISSING
    attack: AttackConfig = MISSING
    target: TargetConfig = MISSING
    case: Any = MISSING        # what the attack aims at: a conf/case/ entry with a `_target_`
    placement: PlacementConfig = MISSING
    images: int = 8            # base images to attack
    heldout_prompts: int = 32  # prompts the attack never saw, per image
    seed: int = 0


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="attack_app_schema", node=AttackAppConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="placement", name="placement_schema", node=PlacementConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="attack", name="attack_schema", node=AttackConfig)
    cs.store(group="target", name="target_schema", node=TargetConfig)


def plain(value: Any) -> str:
    """A config value as its plain string: enum members (Scoring.logprob) become their value."""
    return value.value if isinstance(value, Enum) else str(value)


def pixel_amount(key: str, value: Any) -> float:
    """A budget in pixel units: 0.03, '8/255' or 8/255 (Hydra passes the fraction as a string)."""
    try:
        amount = float(Fraction(str(value).replace(" ", ""))) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{key}={value}: not a number; use a float or a fraction such as 8/255") from None
    if amount < 0:
        raise ConfigError(f"{key}={value}: must be >= 0 (pixel units on [0,1], e.g. 8/255)")
    return amount


def validate_model(model) -> None:
    if (model.builder is None) == (model.name_or_path is None):
        raise ConfigError("model: set exactly one of model.name_or_path (a checkpoint) or model.builder (built offline)")


def validate_common(cfg) -> None:
    from mmsafety.shards import check_shard

    validate_model(cfg.model)
    if getattr(cfg, "batch_size", 1) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be >= 1")
    if (getattr(cfg, "image_workers", None) or 0) < 0:
        raise ConfigError(f"image_workers={cfg.image_workers}: must be >= 0 (0 loads images in the main loop)")
    if "num_shards" in cfg:
        check_shard(cfg.shard, cfg.num_shards)


OBJECTIVES = ("target_string", "target_corpus", "tool_misuse", "verdict_flip", "clip_embed")


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
    if attack.objective not in OBJECTIVES:
        raise ConfigError(f"attack.objective={attack.objective}: use one of {', '.join(OBJECTIVES)}")
    if attack.get("checkpoint_every", 0) < 0:
        raise ConfigError(f"attack.checkpoint_every={attack.checkpoint_every}: must be >= 0 (0 turns it off)")
    for key in ("early_stop_every", "select_every", "clean_answer_tokens"):
        if attack.get(key, 1) < 1:
            raise ConfigError(f"attack.{key}={attack[key]}: must be >= 1")
