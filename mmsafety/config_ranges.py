"""Range checks shared by every app's config: what a type cannot express and would otherwise
fail deep inside a run (a seed torch cannot take)."""

from __future__ import annotations

from mmsafety.errors import ConfigError

SEED_MAX = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def check_seed(key: str, value) -> None:
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}={value}: must be between 0 and 2**63-1, e.g. {key}=0")


def check_seeds(cfg) -> None:
    """`seed`, `model.seed` and, where present, `attack.seed`."""
    check_seed("seed", cfg.seed)
    check_seed("model.seed", cfg.model.seed)
    if "attack" in cfg:
        check_seed("attack.seed", cfg.attack.seed)
