"""One registry type for everything a study or a command names: losses, terms, penalties, models, datasets, tasks,
metrics, trial kinds and executors. An entry is added in the file that defines it, under one name, and every
`--help`, `gan-bench losses` and "valid: ..." message reads the registry, so a new entry is listed everywhere at once.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from bench import BenchError

T = TypeVar("T")


class UnknownName(BenchError):
    """A name that is not in a registry: the message names the kind and lists the valid names."""


class Registry(Generic[T]):
    """Named entries of one kind, in the order they were added, each with a one-line description."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def add(self, name: str, entry: T, description: str = "") -> T:
        """Adds `entry` under `name`; a name is taken once (a second entry under it is a mistake, not an override)."""
        if name in self._entries:
            raise BenchError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._descriptions[name] = description
        return entry

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """The decorator form of add: `@LOSSES.register("ns_gan", "non-saturating GAN")`."""
        return lambda entry: self.add(name, entry, description)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def unknown(self, name: str) -> str:
        """"unknown loss 'x'; valid: a, b, c": the message about a name not in the registry."""
        return f"unknown {self.kind} {name!r}; {self.valid()}"

    def valid(self) -> str:
        """"valid: a, b, c": the tail of every message about a name not in the registry."""
        return f"valid: {', '.join(self._entries)}"

    def names(self) -> list[str]:
        return list(self._entries)

    def description(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
