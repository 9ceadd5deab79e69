"""Adapters register by name; every module in mmsafety.models is imported on first lookup,
so adding a model family is one module (with `@register_adapter`) plus its presets in conf/model/."""

from __future__ import annotations

import pkgutil
from pathlib import Path

from mmsafety.models.base import ModelAdapter
from mmsafety.registry import Registry

def _core_modules() -> list[str]:
    return [f"mmsafety.models.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)])]


# The core's adapters are found by scanning this folder (a new family is one module, nothing to list);
# a plug-in package adds its own through `adapter:<name>` entries.
ADAPTERS: Registry[type[ModelAdapter]] = Registry("model.adapter", kind="adapter", modules=_core_modules)


def register_adapter(name: str):
    """Class decorator: `@register_adapter("llava")`. The class's capabilities come from its bases
    (mmsafety.models.base), so a workload can refuse it by name before it loads."""
    def decorate(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        if not cls.capabilities:
            raise TypeError(f"adapter {name}: derive from the capability bases in mmsafety.models.base")
        cls.name = name
        ADAPTERS.add(name, cls)
        return cls

    return decorate


def adapter_names() -> list[str]:
    return ADAPTERS.names()


def adapter_class(name: str) -> type[ModelAdapter]:
    """The registered class; an unknown name is one line that lists the registered ones."""
    return ADAPTERS.get(name)
