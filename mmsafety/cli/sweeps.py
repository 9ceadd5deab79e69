"""A sweep's command line (`key=a,b,c`) as plain override lists, so every value is checked before any job runs."""

from __future__ import annotations


def override_variants(overrides: list[str]) -> list[list[str]]:
    """Plain override lists that together cover every value of every sweep (`key=a,b,c`):
    each sweep's values in turn, the other sweeps at their first value."""
    # heavy, deferred to when this runs: hydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base, sweeps = [], []
    for raw, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if o.is_hydra_override():
            continue  # hydra.* and hydra/launcher=...: Hydra checks those itself
        if o.is_sweep_override():
            key = raw.split("=", 1)[0]
            values = list(o.sweep_string_iterator())
            sweeps.append((len(base), key, values))
            raw = f"{key}={values[0]}"
        base.append(raw)
    variants = [base]
    for index, key, values in sweeps:
        for value in values[1:]:
            variant = list(base)
            variant[index] = f"{key}={value}"
            variants.append(variant)
    return variants


def is_hydra_override(raw: str) -> bool:
    return raw.startswith(("hydra.", "hydra/", "+hydra", "++hydra"))


def every_job(overrides: list[str]) -> list[list[str]]:
    """Each job of the sweep as its plain override list, in Hydra's order (the basic sweeper's
    cartesian product: job i of the list is job number i)."""
    # heavy, deferred to when this runs: hydra
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
