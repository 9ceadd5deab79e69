"""Hydra search-path plugin: a plug-in package ships its own config groups.

Hydra imports every module under the `hydra_plugins` namespace package and asks each
`SearchPathPlugin` for config folders. This one adds, after mmsafety's own conf/, the config package
of every `conf:<name>` entry in the `mmsafety.plugins` entry-point group (mmsafety.registry):

    [project.entry-points."mmsafety.plugins"]
    "conf:my_bench" = "my_bench.conf"     # a package holding my_bench.yaml, task/*.yaml, ...

so `mmsafety-attack task=my_task` or the plug-in's own primary config resolve without the user
passing --config-dir. Only the entry's value is read: nothing is imported until Hydra reads a file.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "mmsafety.plugins"  # mmsafety.registry.PLUGIN_GROUP (not imported: Hydra loads this module early)


def plugin_config_modules() -> list[tuple[str, str]]:
    """(entry name, config package) for every `conf:` entry, in name order."""
    found = [e for e in entry_points(group=GROUP) if e.name.startswith("conf:")]
    return sorted((e.name.removeprefix("conf:"), e.value) for e in found)


class MmsafetySearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for name, module in plugin_config_modules():
            search_path.append(provider=f"mmsafety-plugin-{name}", path=f"pkg://{module}")
