"""Range checks of the eval app's config that a type cannot express, run before a model loads;
each raises one ConfigError line naming the key and a value that works."""

from __future__ import annotations

from mmsafety.config_ranges import check_seeds
from mmsafety.errors import ConfigError

# The synthetic sample is for quick looks; real data comes from task.root.
MAX_SYNTHETIC_PER_TASK = 10_000


def check_eval_ranges(cfg) -> None:
    if cfg.task.limit is not None and cfg.task.limit < 1:
        raise ConfigError(f"task.limit={cfg.task.limit}: must be >= 1, or null for every meme")
    if not 1 <= cfg.task.synthetic_per_task <= MAX_SYNTHETIC_PER_TASK:
        raise ConfigError(f"task.synthetic_per_task={cfg.task.synthetic_per_task}: must be between 1 and "
                          f"{MAX_SYNTHETIC_PER_TASK} (e.g. 100); point task.root at real data for more")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens}: must be >= 1, or null for the prompt template's")
    check_seeds(cfg)
