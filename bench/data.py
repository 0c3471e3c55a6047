"""Datasets as uint8 tensors in memory, behind a registry of loader functions.

A loader is `loader(image_size: int, **options) -> Dataset`, registered with `@register(...)`; its
keyword-only parameters are its options, so `load` can reject unknown ones before calling it.
Everything here works offline:
- `digits`: scikit-learn's bundled 8×8 handwritten digits, resized; small enough to rebuild on every load;
- `polygons`: the paper's synthetic gray-scale convex polygons (Lucic et al. 2018, section 5), generated
  from a seed and cached on disk as .npy files.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench import BenchError
from bench.io import atomic_numpy_save, atomic_write_json, cache_dir

Loader = Callable[..., "Dataset"]
MIN_IMAGE_SIZE = 8


class UnknownDatasetError(BenchError):
    """The dataset name is not registered."""


@dataclass(frozen=True)
class Dataset:
    name: str
    train: torch.Tensor  # uint8, N×C×H×W, pixels 0..255
    test: torch.Tensor  # uint8, M×C×H×W
    train_labels: torch.Tensor  # int64 (N,): class labels, for the domain classifier behind FID features
    test_labels: torch.Tensor  # int64 (M,)
    num_classes: int

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


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, default_size: int, description: str) -> Callable[[Loader], Loader]:
    """Registers `loader(image_size: int, **options) -> Dataset` under `name`."""

    def decorator(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = _Entry(loader, default_size, description)
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


def default_size(name: str) -> int:
    """The image side `load(name)` uses when no image_size is given."""
    return _entry(name).default_size


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but image_size=True is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BenchError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load(name: str, image_size: int | None = None, **options: Any) -> Dataset:
    """Dataset `name` at image_size×image_size (default: `default_size(name)`).

    Deterministic: the same arguments give bit-identical tensors.
    """
    entry = _entry(name)
    size = entry.default_size if image_size is None else _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    parameters = inspect.signature(entry.loader).parameters
    valid = [p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for option in options:
        if option not in valid:
            raise BenchError(f"unknown option {option!r} for dataset {name!r}; valid: {', '.join(valid) or 'none'}")
    return entry.loader(size, **options)


# ---------------------------------------------------------------------------------------------------------------------
# digits

DIGITS_TEST = 360


@register("digits", 16, "scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes); no download")
def digits(image_size: int) -> Dataset:
    from sklearn.datasets import load_digits  # sklearn is slow to import and only needed here

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(16).unsqueeze(1)  # pixel values are 0..16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(images)))
    train, test = order[:-DIGITS_TEST], order[-DIGITS_TEST:]
    return Dataset("digits", images[train], images[test], labels[train], labels[test], num_classes=10)


# ---------------------------------------------------------------------------------------------------------------------
# polygons

MIN_VERTICES, MAX_VERTICES = 3, 8
# Each gap between consecutive vertices (as an angle on the ellipse) is at least this fraction of the even
# spacing 2π/k, so no two vertices nearly merge and even triangles keep a sizeable area.
MIN_GAP_FRACTION = 0.6
SEMI_AXES = (0.45, 0.85)  # in units of half the image side
EXTENT = 0.9  # every polygon lies within this radius (same units) of the image centre, so the border stays black
SUPERSAMPLING = 4  # per axis: each pixel's gray level is the fraction of its 4×4 sub-samples inside the polygon
CHUNK = 2048  # polygons rasterised at once, to bound memory (~25 MB of masks at 28×28)
# Bump when the generator changes, so stale cached polygons are not reused.
POLYGONS_VERSION = 1


def _polygon_vertices(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vertex counts k (n,) and vertices (n, MAX_VERTICES, 2) in half-image units around the image centre.

    The vertices of each polygon run counter-clockwise; slots past k repeat the first vertex, which adds
    only zero-length edges, so all polygons can be rasterised together.
    """
    k = rng.integers(MIN_VERTICES, MAX_VERTICES + 1, size=n)
    present = np.arange(MAX_VERTICES) < k[:, None]
    # The slack above the minimum gaps is split uniformly over the simplex (normalised exponentials).
    min_gap = MIN_GAP_FRACTION * 2 * np.pi / k
    share = rng.exponential(size=(n, MAX_VERTICES)) * present
    gaps = min_gap[:, None] + (2 * np.pi - k * min_gap)[:, None] * share / share.sum(1, keepdims=True)
    angles = rng.uniform(0, 2 * np.pi, size=(n, 1)) + np.cumsum(gaps, axis=1) - gaps
    semi_axes = rng.uniform(*SEMI_AXES, size=(n, 2))
    rotation = rng.uniform(0, np.pi, size=n)  # an ellipse is symmetric under a half turn
    # Points on an ellipse taken in angular order always form a convex polygon.
    points = semi_axes[:, None, :] * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    cos, sin = np.cos(rotation)[:, None], np.sin(rotation)[:, None]
    x, y = points[..., 0], points[..., 1]
    points = np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)
    slack = (EXTENT - semi_axes.max(axis=1)) / math.sqrt(2)
    points = points + (slack[:, None] * rng.uniform(-1, 1, size=(n, 2)))[:, None, :]
    # Exact copies, not angle 2π, which would leave tiny edges of arbitrary direction after rounding.
    points = np.where(present[..., None], points, points[:, :1])
    return k, points


def _rasterise(vertices: np.ndarray, size: int) -> np.ndarray:
    """White-on-black anti-aliased images (n, size, size) of counter-clockwise convex polygons given in pixel units."""
    n = len(vertices)
    fine = (np.arange(size * SUPERSAMPLING) + 0.5) / SUPERSAMPLING  # sub-sample centres, in pixel units
    edge = np.roll(vertices, -1, axis=1) - vertices
    inside = np.ones((n, len(fine), len(fine)), dtype=bool)
    for j in range(vertices.shape[1]):
        # A point p is inside iff it is left of every edge: cross(edge, p - vertex) >= 0. The cross product
        # splits into a term of the row (y) and a term of the column (x), so the grid is a broadcast comparison.
        rows = edge[:, j, 0, None] * (fine - vertices[:, j, 1, None])
        cols = edge[:, j, 1, None] * (fine - vertices[:, j, 0, None])
        inside &= rows[:, :, None] >= cols[:, None, :]
    blocks = inside.reshape(n, size, SUPERSAMPLING, size, SUPERSAMPLING)
    coverage = blocks.sum(axis=(2, 4), dtype=np.int32)
    return np.round(coverage * (255 / SUPERSAMPLING**2)).astype(np.uint8)


def make_polygons(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random convex polygons: images uint8 (n, 1, size, size) and labels int64 (n,) = vertex count − 3."""
    # All random draws happen up front, so the images do not depend on the chunk size.
    k, vertices = _polygon_vertices(n, rng)
    vertices = (vertices + 1) * (size / 2)  # to pixel units; pixel (i, j) covers [j, j+1] × [i, i+1]
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    for i in range(0, n, CHUNK):
        images[i : i + CHUNK, 0] = _rasterise(vertices[i : i + CHUNK], size)
    return images, (k - MIN_VERTICES).astype(np.int64)


def _read_cache(directory: Path, meta: dict[str, Any], shapes: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if any is missing, unreadable or not what `meta` describes."""
    try:
        if json.loads((directory / "meta.json").read_text()) != meta:
            return None
        arrays = {key: np.load(directory / f"{key}.npy") for key in shapes}
    except (OSError, ValueError, EOFError):
        return None
    for key, shape in shapes.items():
        dtype = np.int64 if key.endswith("labels") else np.uint8
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            return None
    return arrays


@register("polygons", 28, "synthetic gray-scale convex polygons as in the paper (3–8 vertices, 6 classes), from a seed")
def polygons(image_size: int, *, seed: int = 0, n_train: int = 60000, n_test: int = 10000) -> Dataset:
    seed = _check_int("seed", seed, 0)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    directory = cache_dir() / "datasets" / f"polygons-s{image_size}-seed{seed}-n{n_train}-{n_test}"
    meta = {"version": POLYGONS_VERSION, "image_size": image_size, "seed": seed, "n_train": n_train, "n_test": n_test}
    shapes = {
        "train": (n_train, 1, image_size, image_size),
        "train_labels": (n_train,),
        "test": (n_test, 1, image_size, image_size),
        "test_labels": (n_test,),
    }
    arrays = _read_cache(directory, meta, shapes)
    if arrays is None:
        # Independent streams: the test set does not change with n_train.
        train_rng, test_rng = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(2))
        arrays = dict(zip(("train", "train_labels"), make_polygons(n_train, image_size, train_rng)))
        arrays.update(zip(("test", "test_labels"), make_polygons(n_test, image_size, test_rng)))
        (directory / "meta.json").unlink(missing_ok=True)  # until all arrays are rewritten
        for key, array in arrays.items():
            atomic_numpy_save(array, directory / f"{key}.npy")
        atomic_write_json(directory / "meta.json", meta)  # written last: it marks the cache complete
    tensors = {key: torch.from_numpy(array) for key, array in arrays.items()}
    train, test = tensors["train"], tensors["test"]
    return Dataset("polygons", train, test, tensors["train_labels"], tensors["test_labels"], num_classes=6)
