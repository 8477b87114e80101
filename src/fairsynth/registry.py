"""Name -> implementation registries.

Every pluggable piece of fairsynth (dataset readers, fine-tuning methods, quality filters,
metrics, feature extractors) lives in a :class:`Registry`. An implementation registers
itself where it is defined, so adding one touches its own module and nothing central::

    from fairsynth.data.readers import READERS

    @READERS.register("ddi", help="Diverse Dermatology Images metadata CSV")
    class DDIReader: ...

Registries find their members by importing every module of one package
(:meth:`Registry.discover`), so there is no hand-kept table of names.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

class UnknownNameError(ValueError):
    """A name that no member of a registry has; the message lists the valid names."""


#: Every registry created, by kind; ``fairsynth ls`` lists them all.
ALL_REGISTRIES: dict[str, "Registry[Any]"] = {}


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    """A named collection of implementations of one kind.

    Args:
        kind: what the members are, in the user's words (``"readers"``, ``"methods"``).
        package: dotted package whose modules register members when imported.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        if kind in ALL_REGISTRIES:
            raise ValueError(f"a registry of {kind!r} already exists")
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = package is None
        ALL_REGISTRIES[kind] = self

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; the docstring is the default help."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind}: {name!r} is registered twice")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, help or (doc[0] if doc else ""))
            return obj

        return decorator

    def discover(self) -> None:
        """Import every module of the registry's package so that each registers itself."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for info in pkgutil.iter_modules(pkg.__path__, prefix=pkg.__name__ + "."):
            importlib.import_module(info.name)

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind.rstrip('s')} {name!r}; "
                f"available: {', '.join(self.names()) or '(none)'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        self.discover()
        for name in self.names():
            yield self._entries[name]
