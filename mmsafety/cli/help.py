"""`--help` of a Hydra job command: its header, the config groups THIS command reads (those in its
defaults list) with only the options a user can pick, its config, its footer.

Hydra's own `--help` lists every group on the search path (an eval would offer attack, case, deploy
and target) and the structured-config schemas registered in them (`model_schema`, ...); the
template (`hydra.help.template`) is kept, only what fills `$APP_CONFIG_GROUPS` and `$CONFIG` differs.
"""

from __future__ import annotations

import string

from omegaconf import DictConfig, OmegaConf, open_dict

from mmsafety.cli.presets import config_context, group_options

HELP_FLAGS = ("--help", "-h")
LIST_HINT = "One line on each option (what it is, what it can do, whether it is on disk): mmsafety-list GROUP"


def command_groups(cfg: DictConfig) -> list[str]:
    """The config groups a composed config (with its `hydra` node) chose an option of, in its defaults
    list's order: the groups its command reads (Hydra's own hydra/* left out)."""
    return [g for g in cfg.hydra.runtime.choices if not str(g).startswith("hydra")]


def command_help(cfg: DictConfig) -> str:
    """The help text of the command whose config (composed with its `hydra` node) is `cfg`."""
    with config_context():
        lines = [f"{g}: {', '.join(group_options(g))}" for g in command_groups(cfg)]
    groups = "\n".join(lines + (["", LIST_HINT] if lines else []))
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(job):
        del job["hydra"]
    template = OmegaConf.to_container(cfg.hydra.help, resolve=True)["template"]
    return string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=groups, CONFIG=OmegaConf.to_yaml(job), HYDRA_CONFIG_GROUPS="", FLAGS_HELP="")
