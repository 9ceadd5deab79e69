"""`attack.surrogates`: the models an ensemble attack crafts on, from conf/model presets.

Each entry is a preset name (`organism`, weight 1) or a mapping with `model` (the preset), an
optional `weight` (default 1) and any model key to override (`seed`, `name_or_path`, ...):

    attack.surrogates='[{model:organism,seed:0},{model:organism,seed:1,weight:2}]'
    attack.surrogates='[tiny_open_clip,{model:tiny_open_clip,seed:1}]'

Empty (the default): the attack crafts on `model=` alone, as before. With surrogates, `model=`
only judges (the final and the held-out checks); a surrogate whose config is `model=`'s is the
same loaded model, not a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from mmsafety.cli.hydra_errors import explain
from mmsafety.errors import ConfigError, UserError
from mmsafety.models.capabilities import require
from mmsafety.models.registry import adapter_class

_ENTRY_HELP = ("give a preset name or {model: PRESET, weight: W, seed: S, ...}, "
               "e.g. attack.surrogates='[{model:organism,seed:0},{model:organism,seed:1}]'")


@dataclass
class SurrogateSpec:
    """A surrogate as configured: its composed model config and its weight."""

    model: DictConfig
    weight: float

    @property
    def display_name(self) -> str:
        return display_name(self.model)


def display_name(model_cfg) -> str:
    """How records and the transfer matrix name a model: `organism (seed 1)` for a built model, the
    preset's name for a checkpoint."""
    return f"{model_cfg.name} (seed {model_cfg.seed})" if model_cfg.get("builder") else str(model_cfg.name)


def _compose_model(preset: str, overrides: list[str]) -> DictConfig:
    """conf/model/<preset>.yaml with `overrides`, validated by its schema. Works inside a running
    Hydra job (which holds the global Hydra instance) and outside one."""
    # heavy, deferred to when this runs: hydra
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    # heavy, deferred to when this runs: mmsafety.app loads hydra
    from mmsafety.app import CONFIG_MODULE

    args = [f"model={preset}", *overrides]
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="load_model", overrides=args).model
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="load_model", overrides=args).model
    except Exception as e:  # Hydra raises several types; all of them are config mistakes here
        raise UserError(f"attack.surrogates: {explain(e)}") from None


def _entry(i: int, entry) -> tuple[str, float, list[str]]:
    if OmegaConf.is_config(entry):
        entry = OmegaConf.to_container(entry, resolve=True)
    if isinstance(entry, str):
        return entry, 1.0, []
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise ConfigError(f"attack.surrogates[{i}]={entry}: no model preset; {_ENTRY_HELP}")
    weight = entry.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
        raise ConfigError(f"attack.surrogates[{i}].weight={weight}: must be a number > 0")
    overrides = [f"model.{k}={'null' if v is None else v}" for k, v in entry.items() if k not in ("model", "weight")]
    return entry["model"], float(weight), overrides


def surrogate_specs(attack) -> list[SurrogateSpec]:
    """The configured surrogates (empty: the single-model attack), composed from their presets."""
    entries = attack.get("surrogates") or []
    specs = []
    for i, entry in enumerate(entries):
        preset, weight, overrides = _entry(i, entry)
        specs.append(SurrogateSpec(_compose_model(preset, overrides), weight))
    return specs


def check_surrogates(specs: list[SurrogateSpec], needs: frozenset[str], what: str) -> None:
    """Before any weights load: each surrogate's adapter can do what crafting needs."""
    # heavy, deferred to when this runs: mmsafety.config loads hydra
    from mmsafety.config import validate_model

    for spec in specs:
        validate_model(spec.model)
        require(adapter_class(spec.model.adapter), needs, what, f"surrogate {spec.display_name} ({spec.model.adapter})")
    # Records and the transfer matrix name surrogates by display name: two different models under one
    # name (one preset, other name_or_path) would read as the same ensemble member.
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            if a.display_name == b.display_name and not same_model(a.model, b.model):
                raise ConfigError(f"attack.surrogates: two different models are both named {a.display_name!r} "
                                  f"({a.model.get('name_or_path')} and {b.model.get('name_or_path')}); give each "
                                  f"entry its own name, e.g. {{model:{a.model.name},name_or_path:...,name:vit-b-16}}")


def same_model(a, b) -> bool:
    keys = ("adapter", "builder", "name_or_path", "seed", "revision")
    return all(a.get(k) == b.get(k) for k in keys)


def load_surrogate(spec: SurrogateSpec, placement_cfg, job_model_cfg=None, job_adapter=None):
    """The surrogate's adapter, placed as the job's model is; the job's own adapter when the configs match."""
    # heavy, deferred to when this runs: mmsafety.cli.loading loads hydra
    from mmsafety.cli.loading import load_model

    if job_adapter is not None and job_model_cfg is not None and same_model(spec.model, job_model_cfg):
        return job_adapter
    plain = lambda node: OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return load_model(OmegaConf.create({"model": plain(spec.model), "placement": plain(placement_cfg)}))
