"""Adapters register by name; every module in mmsafety.models is imported on first lookup,
so adding a model family is one module (with `@register_adapter`) plus one YAML in conf/model/."""

from __future__ import annotations

import importlib
import pkgutil

from mmsafety.errors import ConfigError
from mmsafety.models.base import VLMAdapter

_ADAPTERS: dict[str, type[VLMAdapter]] = {}


def register_adapter(name: str):
    def decorate(cls: type[VLMAdapter]) -> type[VLMAdapter]:
        cls.name = name
        _ADAPTERS[name] = cls
        return cls

    return decorate


def _import_all() -> None:
    import mmsafety.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"mmsafety.models.{info.name}")


def adapter_names() -> list[str]:
    _import_all()
    return sorted(_ADAPTERS)


def adapter_class(name: str) -> type[VLMAdapter]:
    _import_all()
    if name not in _ADAPTERS:
        raise ConfigError(f"model.adapter={name}: unknown adapter; registered: {', '.join(sorted(_ADAPTERS))}")
    return _ADAPTERS[name]
