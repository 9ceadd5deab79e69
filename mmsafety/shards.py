"""Deterministic data sharding: `shard=i num_shards=n` splits samples by a hash of their key,
so a big run spreads over n jobs whatever order each job reads the data in, and merges back."""

from __future__ import annotations

import hashlib

from mmsafety.errors import ConfigError


def shard_of(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % num_shards


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ConfigError(f"num_shards={num_shards}: must be >= 1")
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard}: must be in 0..{num_shards - 1} (num_shards={num_shards})")
