"""One mechanism for every plug-in point: a named registry with a one-line error.

Adapters, workloads, objectives, target kinds, optimizers, cases, builders and judges each keep a
`Registry`. A lookup of an unknown name raises `ConfigError` that names the key, the bad value and
the registered names, so a typo on the command line is one line, never a traceback. The registry is
also the trust boundary: a record or config can only ever select a registered name, never make the
code import an arbitrary dotted path.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from mmsafety.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> plug-ins of one kind.

    `key` is the config key users set (e.g. "attack.optimizer"); it prefixes every error.
    `modules` are imported on first lookup, so plug-ins that register on import are found without
    the caller importing them first. `entry_points` names a Python entry-point group: every entry
    in it (a module of an installed plug-in package) is imported on first lookup too, so the core
    finds plug-ins it never names (mmsafety.workload.PLUGIN_GROUP).
    """

    def __init__(self, key: str, modules: Iterable[str] = (), entry_points: str | None = None):
        self.key = key
        self._items: dict[str, T] = {}
        self._modules = list(modules)
        self._entry_points = entry_points
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@optimizers.register("sgd")`."""
        def decorate(item: T) -> T:
            self.add(name, item)
            return item

        return decorate

    def add(self, name: str, item: T) -> None:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._items[name] = item

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)
            if self._entry_points:
                from importlib.metadata import entry_points

                for entry in entry_points(group=self._entry_points):
                    entry.load()

    def get(self, name: str) -> T:
        self._load()
        if not isinstance(name, str) or name not in self._items:
            raise ConfigError(f"{self.key}={name}: not registered; use one of {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())
