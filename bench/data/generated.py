"""The datasets generated offline from a seed: `polygons`. (`digits`, read from scikit-learn, is in `packaged`.)"""

from __future__ import annotations

import math

import numpy as np

from bench.data.base import Dataset, _check_int, register
from bench.data.cache import _dataset, cached_arrays
from bench.data.images import NO_RESIZE
from bench.io import cache_dir

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


@register("polygons", 28, "synthetic gray-scale convex polygons as in the paper (3–8 vertices, 6 classes), from a seed")
def polygons(image_size: int, *, seed: int = 0, n_train: int = 60000, n_test: int = 10000) -> Dataset:
    seed = _check_int("seed", seed, 0)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    directory = cache_dir() / "datasets" / f"polygons-s{image_size}-seed{seed}-n{n_train}-{n_test}"
    meta = {"version": POLYGONS_VERSION, "image_size": image_size, "seed": seed, "n_train": n_train, "n_test": n_test}

    def build() -> dict[str, np.ndarray]:
        # Independent streams: the test set does not change with n_train.
        train_rng, test_rng = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(2))
        arrays = dict(zip(("train", "train_labels"), make_polygons(n_train, image_size, train_rng)))
        arrays.update(zip(("test", "test_labels"), make_polygons(n_test, image_size, test_rng)))
        return arrays

    arrays = cached_arrays(directory, meta, build)
    # Rasterised at image_size itself (each pixel's coverage of the polygon), never resized.
    return _dataset("polygons", arrays, num_classes=6, resize=NO_RESIZE)

