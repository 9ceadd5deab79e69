"""Hydra/OmegaConf's composition errors, cut to one line that names the key and the fix: an unknown
option of a group or an unknown key names the closest valid ones first, then the whole list."""

from __future__ import annotations

import re

from mmsafety.cli.presets import HIDDEN_SUFFIX
from mmsafety.config_migration import LAYOUT_1_OBJECTIVE_KEYS, LAYOUT_1_SERVED_DEFAULTS
from mmsafety.registry import did_you_mean


def explain(error: Exception) -> str:
    text = str(error).strip()
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        return _unknown_option(missing.group(1), text)
    cause = error.__cause__ or error
    detail = str(cause).strip()
    key = re.search(r"full_key: (\S+)", detail)
    first = detail.splitlines()[0] if detail else repr(error)
    prefix = f"{key.group(1)}: " if key else ""
    moved = _moved(key.group(1) if key else "", first)
    if moved:
        return prefix + moved
    if " not in " in first:
        return prefix + _unknown_key(cause, first)
    return prefix + first


def _unknown_option(path: str, text: str) -> str:
    """`model=llava7b`: Hydra's 'Could not find' text lists the group's options one per tab-indented line."""
    in_group = re.search(r"Available options in '([^']+)'", text)
    group = in_group.group(1) if in_group else path.rsplit("/", 1)[0]
    option = path[len(group) + 1:] if path.startswith(group + "/") else path.rsplit("/", 1)[-1]
    options = [o for o in re.findall(r"^\t(\S+)$", text, flags=re.M) if not o.endswith(HIDDEN_SUFFIX)]
    return f"{group}={option}: no such option in '{group}'{did_you_mean(option, options, n=3)}; available: {', '.join(options)}"


def _unknown_key(cause: BaseException, first: str) -> str:
    """`attack.stpes=500`: OmegaConf's error carries the node the key was looked up in."""
    name = getattr(cause, "key", None)
    parent = getattr(cause, "parent_node", None)
    keys = [str(k) for k in parent.keys() if str(k) != "hydra"] if hasattr(parent, "keys") else []
    if name is None or not keys:
        return f"no such config key ({first}); `--cfg job` lists the keys"
    return f"no such config key{did_you_mean(name, keys, n=3)}; keys here: {', '.join(keys)}"


def _moved(key: str, first: str) -> str | None:
    """A key the config layout of December 2026 moved (mmsafety.config_migration): where it is now."""
    if key == "attack.objective" and "ObjectiveConfig" in first:
        value = re.search(r"value: (\S+)", first)
        return (f"a node now, one per objective: pick it with attack/objective={value.group(1) if value else 'NAME'} "
                f"(conf/attack/objective/), its keys as attack.objective.KEY")
    name = key.removeprefix("attack.")
    if key.startswith("attack.") and name in LAYOUT_1_OBJECTIVE_KEYS:
        owner, inside = LAYOUT_1_OBJECTIVE_KEYS[name]
        return f"moved to attack.objective.{inside}, a key of objective {owner} (attack/objective={owner})"
    name = key.removeprefix("model.")
    if key.startswith("model.") and name in LAYOUT_1_SERVED_DEFAULTS and " not in " in first:
        return f"a key of served models only (model=openai_compatible and the presets that use it)"
    return None
