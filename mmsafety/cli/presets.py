"""What the config groups offer (conf/ and every plug-in's config package, through Hydra's search
path): the options a user can pick, the groups a preset selects in its defaults list, and a
preset's own comment; and the one check that a command line does not mix workloads.

A preset that belongs to a workload brings its case (`override /case@_global_.case: X` in its
defaults list, as conf/attack/harmbench_pgd_blank.yaml does). Given another case on the command
line, Hydra would run the preset's settings on the wrong workload without a word: that is refused
here in one line that says what to type instead.

Likewise a case that reads no target (a meme verdict, a HarmBench behaviour) would run with a typed
`target=` left unread: that too is one line, naming the cases that do read one.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Mapping, Sequence

from omegaconf import OmegaConf

from mmsafety.errors import ConfigError

# The groups that decide which workload a job runs: a preset that selects one must get its choice.
WORKLOAD_GROUPS = ("case",)
HIDDEN_SUFFIX = "_schema"  # structured-config schemas registered in a group: not options a user picks


CONFIG_MODULE = "mmsafety.conf"  # conf/ in the checkout, shipped in the wheel as this package


@contextmanager
def config_context():
    """Hydra's config search path (conf/ and the plug-ins'), unless a caller has already set it up."""
    # heavy, deferred to when this runs: hydra
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield


def loader():
    """Hydra's config loader of the current `config_context`."""
    # heavy, deferred to when this runs: hydra
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader()


def group_options(group: str) -> list[str]:
    """The options of `group` a user can pick (schemas left out), in name order."""
    return sorted(o for o in loader().get_group_options(group) if not o.endswith(HIDDEN_SUFFIX))


def selected_groups(group: str, option: str) -> dict[str, str]:
    """The groups `group=option` selects in its own defaults list (`override /case@_global_.case: X`
    gives {"case": "X"}); {} when it selects none or cannot be read."""
    repository = getattr(loader(), "repository", None)  # Hydra's config repository (no public accessor)
    if repository is None:
        return {}
    try:
        result = repository.load_config(f"{group}/{option}")
    except Exception:  # a preset Hydra itself reports when it composes
        return {}
    found = {}
    for entry in getattr(result, "defaults_list", None) or []:
        target = getattr(entry, "group", None)
        value = getattr(entry, "value", None)
        if target and isinstance(value, str):
            found[target.lstrip("/")] = value
    return found


def presets_selecting(group: str, target_group: str, value: str) -> list[str]:
    """The options of `group` whose defaults list selects `target_group=value`."""
    return [o for o in group_options(group) if selected_groups(group, o).get(target_group) == value]


def check_workload_groups(choices: Mapping[str, str]) -> None:
    """Refuse, in one line, a composed config (its `hydra.runtime.choices`) where a preset selects a
    workload group (case) that the command line set to something else."""
    for group, option in choices.items():
        if not isinstance(option, str) or group.startswith("hydra") or group in WORKLOAD_GROUPS:
            continue
        for target, wanted in selected_groups(group, option).items():
            given = choices.get(target)
            if target not in WORKLOAD_GROUPS or given is None or given == wanted:
                continue
            fitting = presets_selecting(group, target, given)
            instead = (f"{group}={fitting[0]}" if len(fitting) == 1
                       else f"one of {group}={', '.join(fitting)}") if fitting else None
            pick = f"; for {target}={given} use {instead} (it brings its {target})" if instead else ""
            raise ConfigError(f"{group}={option} runs on {target}={wanted}, not {target}={given}: "
                              f"drop {target}={given}{pick}")


TARGET_GROUP = "target"
# `${target}`, `${target.name}`: a config value that reads the target group (not `${targets}`).
READS_TARGET = re.compile(r"\$\{target[.}\[]")


def reads_target(values) -> bool:
    """Whether a config tree (unresolved, as written) interpolates the target group anywhere."""
    if isinstance(values, dict):
        return any(reads_target(v) for v in values.values())
    if isinstance(values, list):
        return any(reads_target(v) for v in values)
    return isinstance(values, str) and READS_TARGET.search(values) is not None


def typed_target(overrides: Sequence[str]) -> str | None:
    """The first override that sets the target group or one of its keys (`target=exfiltrate`,
    `target.text=...`), as typed; None when there is none."""
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if "=" in override and (key == TARGET_GROUP or key.startswith(TARGET_GROUP + ".")):
            return override
    return None


def check_target_is_read(cfg, choices: Mapping[str, str], overrides: Sequence[str]) -> None:
    """Refuse, in one line, a typed `target=` when nothing in the composed `cfg` (unresolved, the
    target group's own node left out) interpolates the target: the case would ignore it.
    The cases that read one are found in their own files, so a new case needs no list here."""
    typed = typed_target(overrides)
    if typed is None:  # most commands: no copy of the config is made
        return
    config = OmegaConf.to_container(cfg, resolve=False)
    if reads_target({k: v for k, v in config.items() if k not in (TARGET_GROUP, "hydra")}):
        return
    case = choices.get("case")
    readers = [o for o in group_options("case") if reads_target(preset_values("case", o))]
    brought = [f"{g}={o}" for g, o in choices.items()
               if isinstance(o, str) and not g.startswith("hydra") and g != "case"
               and selected_groups(g, o).get("case") == case]
    by = f" (brought by {brought[0]})" if brought else ""
    pick = f", or pick a case that reads one: case={', '.join(readers)}" if readers else ""
    raise ConfigError(f"case={case}{by} has no target, so {typed} would be ignored: drop {typed}{pick}")


def preset_values(group: str, option: str) -> dict:
    """The keys `group=option` sets itself (its file, interpolations unresolved); {} when unreadable."""
    repository = getattr(loader(), "repository", None)
    try:
        result = repository.load_config(f"{group}/{option}") if repository is not None else None
    except Exception:
        return {}
    if result is None or result.config is None:
        return {}
    values = OmegaConf.to_container(result.config, resolve=False)
    return values if isinstance(values, dict) else {}


def open_surrogate(model_choice: str | None, needed=("pixel_loss",)) -> str | None:
    """The model preset to craft on in place of `model_choice` (a model that cannot take gradients):
    the open preset of the same weights when there is one (a served llava-1.5-7b crafts on
    llava_1_5_7b), else llava_1_5_7b, else the first real checkpoint that can do `needed`."""
    from mmsafety.cli.loading import has_capabilities  # heavy (torch, the adapters): only when a route is named

    served = preset_values("model", model_choice).get("name_or_path") if model_choice else None
    able = [o for o in group_options("model")
            if has_capabilities(str(preset_values("model", o).get("adapter")), needed)]
    real = [o for o in able if not preset_values("model", o).get("builder")]
    same = [o for o in real if served and preset_values("model", o).get("name_or_path") == served]
    for choice in (*same, "llava_1_5_7b", *real, *able):
        if choice in able:
            return choice
    return None


def transfer_route(app_name: str, model_choice: str, overrides: list[str], multirun: bool = False) -> str:
    """The commands that attack `model_choice` (which cannot take gradients) by transfer: craft on an
    open surrogate with the same overrides (a sweep stays a sweep: mmsafety-judge judges every job of
    a sweep folder), then judge the saved PNGs on `model_choice`."""
    with config_context():
        surrogate = open_surrogate(model_choice)
    if surrogate is None:
        return ""
    rest = [o for o in overrides if not o.startswith(("model=", "model.", "+model.", "hydra.", "-"))]
    served = [o for o in overrides if o.startswith(("model.", "+model."))]  # e.g. model.max_cost=5: the judge's
    folder = "hydra.sweep.dir=runs/craft" if multirun else "hydra.run.dir=runs/craft"
    craft = " ".join([app_name, *(["-m"] if multirun else []), f"model={surrogate}", *rest, folder])
    judge = " ".join(["mmsafety-judge", "attack_run=runs/craft", f"model={model_choice}", *served])
    return (f"; attack it by transfer: craft on an open model, then judge the saved PNGs on {model_choice}: "
            f"`{craft}` then `{judge}` (the open models: mmsafety-list models)")
