"""Hydra/OmegaConf's composition errors, cut to one line that names the key and the fix."""

from __future__ import annotations

import re


def explain(error: Exception) -> str:
    text = str(error).strip()
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group = missing.group(1).split("/")[0]
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        shown = ", ".join(o for o in options if not o.endswith("_schema"))
        return f"{missing.group(1).replace('/', '=', 1)}: no such option in '{group}'; available: {shown}"
    detail = str(error.__cause__ or error).strip()
    key = re.search(r"full_key: (\S+)", detail)
    first = detail.splitlines()[0] if detail else repr(error)
    prefix = f"{key.group(1)}: " if key else ""
    if " not in " in first:
        return f"{prefix}no such config key ({first}); `--cfg job` lists the keys"
    return prefix + first
