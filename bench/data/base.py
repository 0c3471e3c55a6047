"""The registry of datasets and what reads it: the Dataset type, the register decorator, loading by name, the data
root and the hint a missing dataset prints. Loaders import this module; bench.data imports them and re-exports it."""

from __future__ import annotations

import inspect
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench import BenchError
from bench.io import cache_dir
from bench.registry import Registry

Loader = Callable[..., "Dataset"]
MIN_IMAGE_SIZE = 8


class DatasetMissingError(BenchError):
    """A dataset's files are missing or corrupt (loading never downloads). `problem` is the message without the
    fix, for callers that list several problems and give the fix once."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


@dataclass(frozen=True)
class Dataset:
    name: str
    train: torch.Tensor  # uint8, N×C×H×W, pixels 0..255
    test: torch.Tensor  # uint8, M×C×H×W
    train_labels: torch.Tensor  # int64 (N,): class labels, for the domain classifier behind FID features
    test_labels: torch.Tensor  # int64 (M,)
    num_classes: int
    # Which resize produced the pixels: "none" when the images are at their native size, else the method
    # ("antialias" or "tf1_bilinear", see bench.data.images). It is part of every score's protocol, because FIDs
    # against differently resized real images are not comparable.
    resize: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.train.shape[1:]
        return c, h, w

    def train_on(self, device: torch.device) -> torch.Tensor:
        """The training split on `device`, copied there once: the trials of a pack (bench.trial.run_trials) share it."""
        copies = self.__dict__.setdefault("_train_on", {})  # frozen: the cache goes around __setattr__
        if device not in copies:
            copies[device] = self.train.to(device)
        return copies[device]


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    default_size: int
    channels: int  # 1 (grey) or 3 (RGB): known before loading, so a study is checked without decoding anything
    check: Callable[..., None] | None  # (image_size, **options): raises DatasetMissingError without decoding
    download: Callable[..., None] | None  # (**options): fetches the raw files


def custom_dataset(name: str, loader: Any) -> _Entry:
    """A custom dataset `package.module:function`, which DATASETS.get imports: a loader decorated with register."""
    if not isinstance(getattr(loader, "dataset", None), _Entry):
        raise BenchError(f"custom dataset {name!r}: decorate its loader with @bench.data.register(...)")
    return loader.dataset


DATASETS: Registry[_Entry] = Registry("dataset", custom_dataset, "package.module:function")


def register(
    name: str,
    default_size: int,
    description: str,
    *,
    channels: int = 1,
    check: Callable[..., None] | None = None,
    download: Callable[..., None] | None = None,
) -> Callable[[Loader], Loader]:
    """Registers `loader(image_size: int, **options) -> Dataset` under `name`, whose images have `channels` channels.
In a module of one's own, it makes the loader a custom dataset, named `package.module:function` in a study.

    Datasets read from files also give `check(image_size, **options)`, which raises DatasetMissingError if
    loading would fail for want of files, and `download(**options)`, which fetches them; without them the
    dataset is always available and `fetch` just loads it.
    """

    def decorator(loader: Loader) -> Loader:
        entry = _Entry(loader, default_size, channels, check, download)
        if loader.__module__.startswith(f"{__package__}."):
            DATASETS.add(name, entry, description)
        else:
            loader.dataset = entry  # what DATASETS.get finds on a custom dataset
        return loader

    return decorator


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but image_size=True is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BenchError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def data_root() -> Path:
    """Where the raw files of the real datasets are: $GAN_BENCH_DATA, else <cache_dir()>/data."""
    root = os.environ.get("GAN_BENCH_DATA")
    return Path(root).expanduser() if root else cache_dir() / "data"


def use_data_root(root: Path | str | None) -> None:
    """Points this process and the workers it starts at a data root (`--data-root` or the study's `data_root`)."""
    if root is not None:
        os.environ["GAN_BENCH_DATA"] = str(Path(root).expanduser().resolve())


def fetch_command(*words: str) -> str:
    """The `gan-bench prefetch` command line with these arguments that fetches into this process's data root: the
    fix that a missing dataset's error prints (and bench.prefetch's `command`).

    --data-root is named whenever the root is not the default one: `use_data_root` passes a `--data-root` or a
    study's `data_root` on through $GAN_BENCH_DATA, and a hint printed on a compute node is run on a login node,
    whose environment may differ.
    """
    root = os.environ.get("GAN_BENCH_DATA")
    return shlex.join(["gan-bench", "prefetch", *words, *(["--data-root", root] if root else [])])


def check_name(name: str) -> None:
    """Raises a one-line ValueError (for validators) if `name` is neither a dataset nor a custom one."""
    try:
        DATASETS.get(name)
    except BenchError as error:
        raise ValueError(str(error)) from None


def channels(name: str) -> int:
    """The number of channels of dataset `name`'s images."""
    return DATASETS.get(name).channels


def default_size(name: str) -> int:
    """The image side `load(name)` uses when no image_size is given."""
    return DATASETS.get(name).default_size


def _resolve(name: str, image_size: int | None, options: dict[str, Any]) -> tuple[_Entry, int]:
    """The registry entry and the image size, after checking the size and the option names."""
    entry = DATASETS.get(name)
    size = entry.default_size if image_size is None else _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    parameters = inspect.signature(entry.loader).parameters
    valid = [p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for option in options:
        if option not in valid:
            raise BenchError(f"unknown option {option!r} for dataset {name!r}; valid: {', '.join(valid) or 'none'}")
    return entry, size


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raises a one-line BenchError if `name` is not a dataset or has no option of one of these names."""
    _resolve(name, None, options)


def load(name: str, image_size: int | None = None, **options: Any) -> Dataset:
    """Dataset `name` at image_size×image_size (default: `default_size(name)`); never downloads.

    Deterministic: the same arguments give bit-identical tensors.
    """
    entry, size = _resolve(name, image_size, options)
    return entry.loader(size, **options)


def check_available(name: str, image_size: int | None = None, **options: Any) -> None:
    """Raises DatasetMissingError if `load` would fail for want of files; decodes nothing.

    A dataset is available when its cache at this size is complete or its raw files are all there.
    """
    entry, size = _resolve(name, image_size, options)
    if entry.check is not None:
        entry.check(size, **options)


def fetch(name: str, image_size: int | None = None, **options: Any) -> Dataset:
    """Downloads dataset `name`'s raw files that are not there yet (checking their md5 sums), then loads it."""
    entry, size = _resolve(name, image_size, options)
    if entry.download is not None:
        entry.download(**options)
    return entry.loader(size, **options)
