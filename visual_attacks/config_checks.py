"""Range checks of the attack app's config that a type cannot express, run before a model loads
(except the L2 budget, which needs the model's input size). Each raises one ConfigError line
naming the key and a value that works."""

from __future__ import annotations

import math

from mmsafety.config import pixel_amount, plain
from mmsafety.config_ranges import check_seeds
from mmsafety.errors import ConfigError


def check_counts(cfg) -> None:
    """How many images and held-out prompts, and how many images go through one forward."""
    if cfg.images < 1:
        raise ConfigError(f"images={cfg.images}: must be >= 1 (the number of base images to attack, e.g. images=8)")
    if cfg.heldout_prompts < 1:
        raise ConfigError(f"heldout_prompts={cfg.heldout_prompts}: must be >= 1 (the attack is judged on them, "
                          f"e.g. heldout_prompts=32)")
    if cfg.attack.images_per_batch < 1:
        raise ConfigError(f"attack.images_per_batch={cfg.attack.images_per_batch}: must be >= 1 "
                          f"(images attacked together in one forward, e.g. 8)")


def check_linf_budget(attack) -> None:
    """An L-inf budget above 1 bounds nothing on pixels in [0,1]: almost surely a budget meant in
    8-bit levels (eps=8 for 8/255)."""
    if plain(attack.norm) != "linf":
        return
    eps = pixel_amount("attack.eps", attack.eps)
    if eps > 1:
        raise ConfigError(f"attack.eps={attack.eps}: an L-inf budget above 1 puts no bound on pixels in [0,1]; "
                          f"budgets are in pixel units, e.g. attack.eps=8/255 (or attack=pgd_unconstrained for none)")


def check_l2_budget(norm: str, eps: float, shape: tuple[int, ...]) -> None:
    """An L2 budget above the image's diagonal (sqrt(C*H*W), the largest distance two images in
    [0,1] can have) bounds nothing. `shape` is one image's (C, H, W)."""
    if norm != "l2":
        return
    diagonal = math.sqrt(math.prod(shape))
    if eps > diagonal:
        raise ConfigError(f"attack.eps={eps:g}: an L2 budget above the image's diagonal ({diagonal:.1f} for "
                          f"{'x'.join(map(str, shape))} pixels in [0,1]) puts no bound on it; use a smaller L2 budget, "
                          f"or attack=pgd_linf attack.eps=8/255")


def check_attack_config(cfg) -> None:
    check_counts(cfg)
    check_linf_budget(cfg.attack)
    check_seeds(cfg)
