"""Typed schemas of the core's Hydra configs (model, placement), registered in Hydra's ConfigStore;
each workload registers its own (mmsafety.workload.Workload.register_schemas).

The schemas make Hydra reject unknown keys and wrong types; `validate_*` adds the range
checks a type cannot express. Both report one line that names the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mmsafety.errors import ConfigError
from mmsafety.shards import check_shard


class DType(Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ModelConfig:
    """A model's keys every adapter reads; a served model's own keys are ServedModelConfig's."""

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
class ServedModelConfig(ModelConfig):
    """A model behind an OpenAI-compatible endpoint (adapter: openai_compatible; name_or_path is the
    served model's name): the schema of its presets (`defaults: [served_model_schema]`), holding the
    real defaults, which mmsafety.served.settings reads from here."""

    base_url: Optional[str] = None               # e.g. http://127.0.0.1:8000/v1 (required)
    api_key_env: str = "OPENAI_API_KEY"          # the variable holding the key; the key is never in a config
    max_connections: int = 16                    # requests in flight at once
    timeout_s: float = 60.0                      # per request attempt
    max_retries: int = 5                         # attempts after the first, per request
    backoff_s: float = 0.5                       # first retry's wait, doubling per retry, with jitter
    max_backoff_s: float = 30.0                  # the longest such wait (a Retry-After the server names is waited instead)
    image_format: str = "png"                    # png: lossless, a saved PNG reaches the model as saved | jpeg
    jpeg_quality: int = 90
    temperature: float = 0.0                     # 0: greedy
    max_tokens: Optional[int] = None             # null: what the workload asks for (16 for GOAT's paper prompt)
    top_logprobs: int = 20                       # alternatives per token when scoring choices (the protocol allows 0-20)
    cache: bool = True                           # the persistent response cache
    cache_path: Optional[str] = None             # null: $MMSAFETY_CACHE/served/responses.sqlite
    price_per_million_tokens: Dict[str, float] = field(default_factory=dict)  # {prompt: .., completion: ..}
    max_requests: Optional[int] = None           # budget: HTTP requests this run may send (retries count); the run stops as partial when spent
    max_cost: Optional[float] = None             # budget, in the price table's currency (needs the prices)


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
class ModelAppConfig:
    """Just a model and where it runs: what `load_preset` composes (conf/load_model.yaml)."""

    model: ModelConfig = MISSING
    placement: PlacementConfig = MISSING


def register_schemas() -> None:
    """The core's schemas; each workload adds its own (Workload.register_schemas)."""
    cs = ConfigStore.instance()
    cs.store(name="model_app_schema", node=ModelAppConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="model", name="served_model_schema", node=ServedModelConfig)
    cs.store(group="placement", name="placement_schema", node=PlacementConfig)


def plain(value: Any) -> str:
    """A config value as its plain string: enum members (Scoring.logprob) become their value."""
    return value.value if isinstance(value, Enum) else str(value)


def pixel_amount(key: str, value: Any) -> float:
    """A budget in pixel units: 0.03, '8/255' or 8/255 (Hydra passes the fraction as a string)."""
    try:
        amount = float(Fraction(str(value).replace(" ", ""))) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):  # TypeError: null; OverflowError: 1e400 as a fraction
        raise ConfigError(f"{key}={value}: not a number; use a float or a fraction such as 8/255") from None
    if amount != amount or amount in (float("inf"), float("-inf")):
        raise ConfigError(f"{key}={value}: not a finite number; use a float or a fraction such as 8/255")
    if amount < 0:
        raise ConfigError(f"{key}={value}: must be >= 0 (pixel units on [0,1], e.g. 8/255)")
    return amount


def validate_model(model) -> None:
    if (model.builder is None) == (model.name_or_path is None):
        raise ConfigError("model: set exactly one of model.name_or_path (a checkpoint) or model.builder (built offline)")


def validate_common(cfg) -> None:
    """Checks every job shares: the model source, and the shard when the config has one."""
    validate_model(cfg.model)
    if "num_shards" in cfg:
        check_shard(cfg.shard, cfg.num_shards)
