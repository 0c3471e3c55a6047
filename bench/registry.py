"""One registry type for everything a study or a command names: losses, terms, penalties, models, datasets, tasks,
metrics, trial kinds and executors. An entry is added in the file that defines it, under one name, and every
`--help`, `gan-bench losses` and "valid: ..." message reads the registry, so a new entry is listed everywhere at once.

A registry that takes extensions also resolves names written `package.module:name`: the module is imported (from the
current folder, a loaded study file's folder, $GAN_BENCH_LOSS_PATH or the installed packages) and its attribute turned
into an entry by the registry's `custom` function. That is how a user's own loss, term, dataset, metric or executor
is one file and one name (README, "Extending gan-bench"). Importing runs the module's code: name only code you trust.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from bench import BenchError

T = TypeVar("T")
# Where extension modules are imported from, besides the current folder: a study file's folder is added when the
# study is loaded. An environment variable, so that worker processes and SLURM tasks find the same modules.
SEARCH_PATH_VARIABLE = "GAN_BENCH_LOSS_PATH"


def add_search_path(folder: Path) -> None:
    """Lets extensions be imported from `folder` (a study file's), in this process and the workers it starts."""
    folders = [f for f in os.environ.get(SEARCH_PATH_VARIABLE, "").split(os.pathsep) if f]
    folder = str(Path(folder).resolve())
    if folder not in folders:
        os.environ[SEARCH_PATH_VARIABLE] = os.pathsep.join([*folders, folder])


def import_named(name: str, kind: str, form: str = "package.module:name") -> Any:
    """The attribute that `package.module:attribute` names, its module imported from the search path; a one-line
    UnknownName if it cannot be."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise UnknownName(f"custom {kind} {name!r} must be written {form}")
    for folder in [os.getcwd(), *os.environ.get(SEARCH_PATH_VARIABLE, "").split(os.pathsep)]:
        if folder and folder not in sys.path:
            sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises as it is imported
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # collapsed: the CLI shows exactly one line
        raise UnknownName(f"custom {kind} {name!r}: cannot import {module_name!r} ({reason}); extensions are imported "
                          f"from the current folder, the study file's folder and ${SEARCH_PATH_VARIABLE}") from exc
    if not hasattr(module, attribute):
        raise UnknownName(f"custom {kind} {name!r}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


class UnknownName(BenchError):
    """A name that is not in a registry: the message names the kind and lists the valid names."""


class Registry(Generic[T]):
    """Named entries of one kind, in the order they were added, each with a one-line description."""

    def __init__(self, kind: str, custom: Callable[[str, Any], T] | None = None, form: str = "package.module:name"):
        """`custom(name, attribute)`: the entry for an extension named as `form` says, or a one-line BenchError; a
        registry without it takes registered names only."""
        self.kind, self.custom, self.form = kind, custom, form
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
        """The entry registered as `name`, or the extension `name` names."""
        if name in self._entries:
            return self._entries[name]
        if self.custom is not None and ":" in name:
            return self.custom(name, import_named(name, self.kind, self.form))
        raise UnknownName(self.unknown(name))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def unknown(self, name: str) -> str:
        """"unknown loss 'x'; valid: a, b, c": the message about a name not in the registry."""
        return f"unknown {self.kind} {name!r}; {self.valid()}"

    def valid(self) -> str:
        """"valid: a, b, c" (", or package.module:function" where extensions are taken): the tail of every message
        about a name not in the registry."""
        return f"valid: {', '.join(self._entries)}" + (f", or {self.form}" if self.custom is not None else "")

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
