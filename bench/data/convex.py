"""`triangles`, `squares`: compare_gan v1's convex-polygon sets (Lucic et al. 2018, section 5), one shape per set.

v1 (`gan_lib.py` 61-67, 104-118 on its branch v1) reads `<dataset root>/convex/<name>.npz`, arrays `x` (80,000
images 28×28×1, floats in [0, 1], black shapes on white) and `y` (the vertex count), asserts 80,000 images, and
splits them train `[:60000]`, test `[-20000:-10000]` (what v1's FID evaluates against), hold-out `[-10000:]`. Its
model gets `x` as it is: no inversion, no rescaling (`gans/abstract_gan.py` 65, 253).

The authors' generator is the notebook `colabs/Convex_Polygons_Dataset.ipynb` on compare_gan's master branch;
`generate` is that notebook, vectorised, and with the same seed draws the same polygons in the same order. Where the
notebook's code differs from its own text, generator `notebook` (the default) does what the code does and
`corrected` what the text says:
- the text samples vertices on an ellipse; the code on a circle of radius 0.75 · 28 / 2 = 10.5 px. The text gives no
  axes, so `corrected` keeps the circle;
- the "random rotation" is `np.radians(rand() · 2π)`, radians converted again: at most 2π° = 6.28°;
  `corrected`: uniform in [0, 2π);
- the minimum gap between consecutive vertices is `min_segment_angle / 2` = 10°, not the stated 20°: the offset
  within a segment spans `segment − min / 2`; `corrected` spans `segment − min`, so every gap is ≥ 20°;
- the text centres the "center of mass"; the code the mean of the vertices, which differs for quadrilaterals;
  `corrected` centres the area centroid;
- each pixel is the share of its 8×8 sub-samples outside the polygon (a box filter, `render`), in both.

Loading makes the file when it is missing: unlike the real datasets, which never download at load time, the file is
made offline and from a fixed seed, as `polygons` is, so a compute node without internet makes the same bytes a
login node would. A file already there (the authors' own, in v1's layout) is read as it is and never overwritten.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import BenchError
from bench.data.base import Dataset, DatasetMissingError, data_root, register
from bench.data.cache import REAL_CACHE_VERSION, _dataset, cached_arrays
from bench.data.images import DEFAULT_RESIZE, NO_RESIZE, _resized
from bench.io import atomic_write_bytes, cache_lock

SHAPES = {"triangles": 3, "squares": 4}  # dataset name: vertex count
GENERATORS = ("notebook", "corrected")
# v1's splits, by position in the file: train [:60000], test [-20000:-10000], hold-out [-10000:].
TRAIN_COUNT, TEST_COUNT, HOLDOUT_COUNT = 60000, 10000, 10000
SIZE = 28
# The notebook's call (its last cell) and GenerateDataset's default seed.
MIN_SEGMENT_ANGLE = 20.0  # degrees
SCALE = 0.75  # the circle's diameter, as a share of the image side
SUBPIXELS = 8  # per axis
SEED = 0
CHUNK = 2048  # polygons rasterised at once: ~150 MB of temporaries at 28×28


@dataclass(frozen=True)
class Polygons:
    """Random polygons as the notebook draws them: k vertices on a circle, then turned and centred."""

    angles: np.ndarray  # (N, k) the vertices' polar angles on the circle, radians, increasing, before the turn
    rotation: np.ndarray  # (N,) radians: the notebook's x·R turns row vectors by −rotation (angle a → a − rotation)
    centre_on: str  # "vertex_mean" (the notebook) or "centroid" (the text's centre of mass)

    def vertices(self, size: int = SIZE) -> np.ndarray:
        """(N, k, 2) vertices in pixel coordinates, as `render` takes them: on a circle of diameter SCALE·size,
        centred on (size/2, size/2). Computed in the notebook's order of operations."""
        unit = (np.stack([np.cos(self.angles), np.sin(self.angles)], axis=-1) + 1.0) / 2.0  # circle in [0, 1]²
        cos, sin = np.cos(self.rotation)[:, None], np.sin(self.rotation)[:, None]
        turned = np.stack([unit[..., 0] * cos + unit[..., 1] * sin, unit[..., 1] * cos - unit[..., 0] * sin], -1)
        points = turned * (size * SCALE)
        centre = points.mean(axis=1) if self.centre_on == "vertex_mean" else _centroid(points)
        return points + (size / 2.0 - centre)[:, None, :]


def _centroid(points: np.ndarray) -> np.ndarray:
    """(N, 2) area centroids of the polygons (N, k, 2) (shoelace formula)."""
    following = np.roll(points, -1, axis=1)
    cross = points[..., 0] * following[..., 1] - following[..., 0] * points[..., 1]  # twice each triangle's area
    weighted = ((points + following) * cross[..., None]).sum(axis=1)
    return weighted / (3.0 * cross.sum(axis=1))[:, None]


def _check_generator(what: str, generator: Any) -> str:
    if generator not in GENERATORS:
        raise BenchError(f"{what} must be notebook or corrected, got {generator!r}")
    return generator


def draw(count: int, n_vertices: int, rng: np.random.RandomState, generator: str = "notebook") -> Polygons:
    """`count` random polygons with `n_vertices` vertices, from `rng`'s next count·(k + 1) uniforms in the order the
    notebook draws them (per polygon: k offsets, then the rotation), so np.random.RandomState(seed) replays
    `np.random.seed(seed)` there."""
    _check_generator("draw: generator", generator)
    uniforms = rng.random_sample((count, n_vertices + 1))
    segment = 360.0 / n_vertices
    # The notebook lets each vertex's offset span segment − min/2, which leaves gaps of min/2; the text means min.
    span = segment - MIN_SEGMENT_ANGLE / (2.0 if generator == "notebook" else 1.0)
    degrees = np.arange(n_vertices) * segment + MIN_SEGMENT_ANGLE / 2.0 + uniforms[:, :n_vertices] * span
    turn = uniforms[:, n_vertices] * 2 * np.pi
    rotation = np.radians(turn) if generator == "notebook" else turn  # the notebook converts radians again
    centre_on = "vertex_mean" if generator == "notebook" else "centroid"
    return Polygons(degrees * np.pi / 180.0, rotation, centre_on)


def _row_spans(vertices: np.ndarray, rows: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """For each convex polygon (N, k, 2) and each first coordinate in `rows` (R,), the lowest and highest sub-sample
    column 0 … columns − 1 inside it, int16 (N, R) each; low > high where none is."""
    start = vertices[:, :, None, :]
    delta = (np.roll(vertices, -1, axis=1) - vertices)[:, :, None, :]
    # Edges along the rows never cross one, nor do zero-length edges (a fitted polygon's, bench.polygon_metrics):
    # their t is infinite or NaN, excluded below.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rows - start[..., 0]) / delta[..., 0]
        crossing = start[..., 1] + t * delta[..., 1]  # (N, k, R)
    hits = (t >= 0) & (t <= 1)
    low = np.where(hits, crossing, np.inf).min(axis=1)
    high = np.where(hits, crossing, -np.inf).max(axis=1)
    # Clipped to the grid (an empty row's ±inf too), so int16 holds them: the (N, R, size + 1) arrays stay small.
    return (np.clip(np.ceil(low), 0, columns).astype(np.int16),
            np.clip(np.floor(high), -1, columns - 1).astype(np.int16))


def _render_chunk(vertices: np.ndarray, size: int, subpixels: int) -> np.ndarray:
    r, lead = subpixels, (subpixels - 1) // 2
    # The notebook's scipy convolve with an r×r box, sampled every r-th sub-sample, sums sub-samples
    # r·i − lead … r·i − lead + r − 1 into pixel i (lead 3 for r = 8); those before the first sub-sample are white
    # (cval 1): rows −lead … −1 count none.
    rows = np.arange(size * r) - lead
    low, high = _row_spans(vertices * r, rows.astype(np.float64), size * r)
    high[:, rows < 0] = -1
    # Inside sub-samples up to column t of each row: clip(t − low + 1, 0, length); a pixel's count is a difference.
    ends = (np.arange(size + 1) * r - lead - 1).astype(np.int16)
    length = np.maximum(high - low + 1, 0)[..., None]
    upto = np.clip(ends - low[..., None] + 1, 0, length)
    inside = np.diff(upto, axis=-1).reshape(len(vertices), size, r, size).sum(axis=2)
    return (1.0 - inside / float(r * r)).astype(np.float32)


def render(vertices: np.ndarray, size: int = SIZE, subpixels: int = SUBPIXELS) -> np.ndarray:
    """Rasterises convex polygons as the notebook does: float32 (N, size, size), 1.0 white outside, 0.0 black inside,
    each pixel the share of its subpixels × subpixels sub-samples outside the polygon (multiples of 1/64 at 8).

    `vertices` (N, k, 2), in order around each polygon (either way), in pixel coordinates: vertices[..., 0] is the
    row (the image's first axis, the notebook's x), vertices[..., 1] the column. Sub-samples sit at multiples of
    1/subpixels from 0; pixel (i, j) averages those at (i + (m − 3)/8, j + (n − 3)/8), m, n = 0 … 7 (at 8
    subpixels; in general the offset is (subpixels − 1) // 2), so its centre is near (i, j), not (i + ½, j + ½),
    and the first row and column have only 5 of their 8 sub-rows and sub-columns (the rest count as white). A
    sub-sample exactly on an edge may differ from matplotlib's test; for random vertices that never happens.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 3 or vertices.shape[-1] != 2 or vertices.shape[1] < 3 or not np.isfinite(vertices).all():
        raise BenchError(f"render: vertices must be finite, of shape (N, k, 2) with k >= 3, got {vertices.shape}")
    images = np.empty((len(vertices), size, size), dtype=np.float32)
    for i in range(0, len(vertices), CHUNK):
        images[i : i + CHUNK] = _render_chunk(vertices[i : i + CHUNK], size, subpixels)
    return images


def generate(n_vertices: int, generator: str = "notebook", seed: int = SEED,
             count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's GenerateDataset(count, n_vertices, 20, 0.75, 28, 8, True, seed), in v1's layout: x float32
    (count, 28, 28, 1) in [0, 1], y int8 (count,) = n_vertices, shuffled by the permutation the notebook draws last.
    `count` defaults to v1's 80,000."""
    count = TRAIN_COUNT + TEST_COUNT + HOLDOUT_COUNT if count is None else count
    rng = np.random.RandomState(seed)
    polygons = draw(count, n_vertices, rng, generator)
    order = rng.permutation(count)  # drawn after the polygons, as there; rendered in that order, to save a copy
    return render(polygons.vertices()[order])[..., None], np.full(count, n_vertices, dtype=np.int8)


def npz_path(name: str, generator: str = "notebook") -> Path:
    """Where v1 reads the set (`<data root>/convex/<name>.npz`); the corrected generator's file sits beside it."""
    return data_root() / "convex" / (f"{name}.npz" if generator == "notebook" else f"{name}-{generator}.npz")


def _write(path: Path, name: str, generator: str) -> None:
    x, y = generate(SHAPES[name], generator)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, y=y)  # float32 k/64: mostly 1.0, so ~20 times smaller compressed
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:
        raise BenchError(f"dataset {name!r}: cannot write {path}: {error.strerror or error}; make "
                         f"{path.parent} writable or choose another --data-root") from None


def ensure_file(name: str, generator: str = "notebook") -> Path:
    """The set's .npz, generated (offline, from SEED) and written atomically first if it is not there; one process
    generates it while the others wait."""
    path = npz_path(name, generator)
    with cache_lock(path):
        if not path.is_file():
            _write(path, name, generator)
    return path


def _corrupt(name: str, path: Path, problem: str) -> DatasetMissingError:
    return DatasetMissingError(f"dataset {name!r}: {path}: {problem}; delete it to have gan-bench generate it again, "
                               f"or put compare_gan v1's file there", problem=f"dataset {name!r}: {path}: {problem}")


def read_images(name: str, path: Path) -> np.ndarray:
    """The file's images as v1 reads them, checked, as uint8 (80,000, 1, 28, 28) (round(255·x))."""
    count = TRAIN_COUNT + TEST_COUNT + HOLDOUT_COUNT
    try:
        with np.load(path) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise _corrupt(name, path, f"holds {sorted(arrays.files)}, not v1's arrays x (images) and y (labels)")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _corrupt(name, path, f"not a readable .npz ({' '.join(str(error).split())})") from None
    if x.shape not in ((count, SIZE, SIZE, 1), (count, SIZE, SIZE)):
        raise _corrupt(name, path, f"x has shape {x.shape}; v1 expects {count:,} images of 28×28×1")
    if len(y) != count:
        raise _corrupt(name, path, f"y has {len(y):,} labels for {count:,} images")
    # v1 feeds x to the model as it is, so its pixels are floats in [0, 1] (mnist's are decoded to that range too).
    if not np.issubdtype(x.dtype, np.floating) or not (x.min() >= 0 and x.max() <= 1):
        raise _corrupt(name, path, f"x must be floats in [0, 1] as v1 feeds them to the model, got {x.dtype} "
                                   f"from {x.min()} to {x.max()}")
    scaled = x.reshape(count, 1, SIZE, SIZE) * 255.0  # one temporary, rounded in place: v1's files may be float64
    return np.round(scaled, out=scaled).astype(np.uint8)


def holdout(name: str, image_size: int = SIZE, generator: str = "notebook") -> torch.Tensor:
    """The last 10,000 images of the set (v1's hold-out, for recall), uint8 (10,000, 1, image_size, image_size),
    resized as `load` resizes the splits; the file is generated first if it is missing."""
    generator = _check_generator(f"option generator of dataset {name!r}", generator)
    images = torch.from_numpy(read_images(name, ensure_file(name, generator))[-HOLDOUT_COUNT:])
    return _resized(images, image_size, DEFAULT_RESIZE)


def _load(name: str, image_size: int, generator: str) -> Dataset:
    """Train [:60000] and test [-20000:-10000] of the file, cached as uint8 beside it (rebuilt when the file
    changes); one class, so labels are 0."""
    generator = _check_generator(f"option generator of dataset {name!r}", generator)
    path = ensure_file(name, generator)
    stat = path.stat()
    suffix = "" if generator == "notebook" else f"-{generator}"
    directory = data_root() / "gan-bench-cache" / f"{name}-{image_size}{suffix}"
    meta = {"version": REAL_CACHE_VERSION, "name": name, "image_size": image_size, "source": str(path),
            "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}

    def build() -> dict[str, np.ndarray]:
        images = torch.from_numpy(read_images(name, path))
        train, test = images[:TRAIN_COUNT], images[-(TEST_COUNT + HOLDOUT_COUNT) : -HOLDOUT_COUNT]
        arrays = {"train": _resized(train, image_size, DEFAULT_RESIZE).numpy(),
                  "test": _resized(test, image_size, DEFAULT_RESIZE).numpy()}
        arrays.update({f"{split}_labels": np.zeros(len(arrays[split]), dtype=np.int64) for split in ("train", "test")})
        return arrays

    arrays = cached_arrays(directory, meta, build)
    # One shape per set, so one class: the domain FID extractor, a classifier, refuses it (use inception).
    return _dataset(name, arrays, num_classes=1, resize=NO_RESIZE if image_size == SIZE else DEFAULT_RESIZE)


@register("triangles", SIZE, "compare_gan v1's convex triangles: 28×28 gray, black on white, 60k/10k and a 10k "
          "hold-out, one class; <data root>/convex/triangles.npz, generated from a seed if missing (option generator)")
def triangles(image_size: int, *, generator: str = "notebook") -> Dataset:
    return _load("triangles", image_size, generator)


@register("squares", SIZE, "compare_gan v1's convex quadrilaterals: 28×28 gray, black on white, 60k/10k and a 10k "
          "hold-out, one class; <data root>/convex/squares.npz, generated from a seed if missing (option generator)")
def squares(image_size: int, *, generator: str = "notebook") -> Dataset:
    return _load("squares", image_size, generator)
