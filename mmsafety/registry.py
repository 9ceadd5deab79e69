"""One mechanism for every plug-in point: a named registry, filled lazily, with a one-line error.

Adapters, workloads, objectives, target kinds, optimizers, cases, builders, judges and HarmBench
methods each keep a `Registry`. A lookup of an unknown name raises `ConfigError` that names the key,
the bad value and the registered names, so a typo on the command line is one line, never a
traceback. The registry is also the trust boundary: a record or config can only ever select a
registered name, never make the code import an arbitrary dotted path.

Plug-ins (this project's workloads and any installed package) declare their entries in ONE
entry-point group, `mmsafety.plugins`. An entry's name is `<kind>:<name>` and its value a module
(whose import registers `name`) or `module:object` (the object is registered under `name`):

    [project.entry-points."mmsafety.plugins"]
    "workload:my_bench" = "my_bench.workload:WORKLOAD"
    "objective:my_loss" = "my_bench.objectives"

A registry reads only the entries of its own kind, and imports one entry when its name is first
looked up: reading a record of one workload never imports another workload's model code. An entry
that fails to import is one warning, and the registry goes on with every other entry.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from mmsafety.errors import ConfigError

T = TypeVar("T")

PLUGIN_GROUP = "mmsafety.plugins"


def closest(name: object, names: Iterable[str], n: int = 3) -> list[str]:
    """The names most like `name` (a typo's likely intent), best first; [] when none is close."""
    return difflib.get_close_matches(str(name), list(names), n=n, cutoff=0.6)


def did_you_mean(name: object, names: Iterable[str], n: int = 1) -> str:
    """' (did you mean a?)', ' (did you mean a, b?)' or '' when nothing is close."""
    close = closest(name, names, n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


class PluginWarning(UserWarning):
    """A plug-in entry (or a built-in module) that failed to import; the registry goes on without it."""


class Registry(Generic[T]):
    """Names -> plug-ins of one kind.

    `key` is the config key users set (e.g. "attack.optimizer"); it prefixes every error. `kind` selects
    this registry's entries in the `mmsafety.plugins` group (`<kind>:<name>`); None: no entries.
    `modules` are the core's own modules that register on import (e.g. every adapter module); they are
    imported when a name is not found otherwise, or when every name is asked for.
    """

    def __init__(self, key: str, kind: str | None = None, modules: Iterable[str] | Callable[[], Iterable[str]] = ()):
        self.key = key
        self.kind = kind
        self._items: dict[str, T] = {}
        self._modules = modules
        self._modules_done = False
        self._entries: dict[str, EntryPoint] | None = None
        self._failed: set[str] = set()  # entry names whose import failed once: warned, then left out
        self._loading: set[str] = set()  # guards a module that looks its own registry up while importing

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

    # -- lazy loading -------------------------------------------------------------------------------

    def _declared(self) -> dict[str, EntryPoint]:
        """This kind's entries (reading package metadata imports nothing)."""
        if self._entries is None:
            prefix = f"{self.kind}:"
            found = entry_points(group=PLUGIN_GROUP) if self.kind else ()
            self._entries = {e.name[len(prefix):]: e for e in found if e.name.startswith(prefix)}
        return self._entries

    def _load_entry(self, name: str) -> None:
        entry = self._declared().get(name)
        if entry is None or name in self._items or name in self._failed or name in self._loading:
            return
        self._loading.add(name)
        try:
            loaded = entry.load()
            if entry.attr and name not in self._items:
                self.add(name, loaded)
            if name not in self._items:
                raise LookupError(f"importing {entry.value} did not register {name!r}")
        except Exception as error:  # a broken plug-in must not take the others down with it
            self._failed.add(name)
            warnings.warn(f"{PLUGIN_GROUP} entry {entry.name} = {entry.value} skipped: "
                          f"{type(error).__name__}: {error}", PluginWarning, stacklevel=4)
        finally:
            self._loading.discard(name)

    def _load_modules(self) -> None:
        if self._modules_done:
            return
        self._modules_done = True  # set first: a module below may look this registry up while it imports
        for module in self._modules() if callable(self._modules) else self._modules:
            try:
                importlib.import_module(module)
            except Exception as error:
                warnings.warn(f"{self.key}: module {module} skipped: {type(error).__name__}: {error}",
                              PluginWarning, stacklevel=4)

    def _find(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._items:
            self._load_entry(name)
        if name not in self._items:
            self._load_modules()
        return name in self._items

    def _load_all(self) -> None:
        for name in list(self._declared()):
            self._load_entry(name)
        self._load_modules()

    # -- lookups ------------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        if not self._find(name):
            raise ConfigError(f"{self.key}={name}: not registered{did_you_mean(name, self.names())}; "
                              f"use one of {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Every name, without importing plug-in entries (their names are declared); the core's own
        modules are imported, since their names are known only by importing them."""
        self._load_modules()
        declared = (n for n in self._declared() if n not in self._failed)
        return sorted({*self._items, *declared})

    def __contains__(self, name: object) -> bool:
        return self._find(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """Every (name, item), importing every entry (each failure one warning)."""
        self._load_all()
        return sorted(self._items.items())
