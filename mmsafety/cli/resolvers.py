"""OmegaConf resolvers the configs use in folder names, and the schemas every config composes with."""

from __future__ import annotations

import re

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mmsafety.cli.run_identity import config_hash
from mmsafety.config import plain, register_schemas
from mmsafety.workload import WORKLOADS


def slug(value) -> str:
    """A folder-safe spelling of a config value: 8/255 -> 8-255, Scoring.logprob -> logprob."""
    text = plain(value)
    text = re.sub(r"^[A-Z]\w*\.(\w+)$", r"\1", text)  # an enum interpolated as ClassName.member
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def shard_suffix(shard, num_shards) -> str:
    """`-shard1of4` in folder names of sharded jobs, nothing otherwise."""
    return f"-shard{shard}of{num_shards}" if int(num_shards) > 1 else ""


def register() -> None:
    """The resolvers, the core's schemas and every registered workload's schemas (idempotent)."""
    register_schemas()
    for _, workload in WORKLOADS.items():
        workload.register_schemas(ConfigStore.instance())
    if not OmegaConf.has_resolver("slug"):
        OmegaConf.register_new_resolver("slug", slug)
    if not OmegaConf.has_resolver("config_hash"):
        OmegaConf.register_new_resolver("config_hash", config_hash)
    if not OmegaConf.has_resolver("shard_suffix"):
        OmegaConf.register_new_resolver("shard_suffix", shard_suffix)
