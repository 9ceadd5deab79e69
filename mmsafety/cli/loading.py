"""Load the configured model, after checking by its adapter class that it can do what the job needs."""

from __future__ import annotations

from omegaconf import DictConfig

from mmsafety.config import plain
from mmsafety.errors import ConfigError
from mmsafety.models.base import ModelAdapter
from mmsafety.models.capabilities import missing, require
from mmsafety.models.loading import LoadOptions
from mmsafety.models.registry import adapter_class
from mmsafety.organisms.builders import ensure_built
from mmsafety.placement import resolve_placement


class MissingCapability(ConfigError):
    """The configured model lacks capabilities the job needs (`missing`); one line, before any weights load."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def check_capabilities(cfg: DictConfig, workload_name: str, needs: dict[str, frozenset[str]]) -> None:
    """One line, before any weights load, when the configured adapter lacks a capability the job needs."""
    cls = adapter_class(cfg.model.adapter)
    for who, needed in needs.items():
        try:
            require(cls, needed, f"{workload_name} with {who}", f"model={cfg.model.name} ({cfg.model.adapter})")
        except ConfigError as e:
            raise MissingCapability(str(e), missing(cls, needed)) from None


def has_capabilities(adapter: str, needed) -> bool:
    """Whether the adapter registered as `adapter` can do all of `needed` (False for an unknown adapter)."""
    try:
        return not missing(adapter_class(adapter), needed)
    except ConfigError:
        return False


def load_model(cfg: DictConfig) -> ModelAdapter:
    """Build (if it is a builder model) and load the configured model through its adapter."""
    m, p = cfg.model, cfg.placement
    if getattr(adapter_class(m.adapter), "takes_model_config", False):  # a served model: no weights to place
        return adapter_class(m.adapter).from_config(m)
    placement = resolve_placement(p.device, plain(p.dtype), p.device_map, p.gradient_checkpointing, p.compile)
    source = str(ensure_built(m.builder, m.seed)) if m.builder else m.name_or_path
    opts = LoadOptions(allow_pickle=m.allow_pickle, trust_remote_code=m.trust_remote_code,
                       revision=m.revision, local_files_only=m.local_files_only)
    return adapter_class(m.adapter).load(source, opts, placement)
