"""Datasets as uint8 tensors, behind a registry of loader functions.

A loader is `loader(image_size: int, **options) -> Dataset`, registered with `@register(...)`; its
keyword-only parameters are its options, so `load` can reject unknown ones before calling it.
Offline, from a seed or a bundled file:
- `digits`: scikit-learn's bundled 8×8 handwritten digits, resized; small enough to rebuild on every load;
- `polygons`: the paper's synthetic gray-scale convex polygons (Lucic et al. 2018, section 5), generated
  from a seed and cached on disk as .npy files.
From files on disk, decoded once into a uint8 .npy cache that later loads memory-map:
- `mnist`, `fashion_mnist`, `cifar10`, `celeba`: read by torchvision's dataset classes from `data_root()`;
  `load` never downloads (a missing or corrupt file raises DatasetMissingError), `fetch` does;
- `folder`: any ImageFolder-style directory of images (option `path`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

from bench import BenchError
from bench.io import atomic_numpy_save, atomic_write_json, cache_dir

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
    check: Callable[..., None] | None  # (image_size, **options): raises DatasetMissingError without decoding
    download: Callable[..., None] | None  # (**options): fetches the raw files


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    default_size: int,
    description: str,
    *,
    check: Callable[..., None] | None = None,
    download: Callable[..., None] | None = None,
) -> Callable[[Loader], Loader]:
    """Registers `loader(image_size: int, **options) -> Dataset` under `name`.

    Datasets read from files also give `check(image_size, **options)`, which raises DatasetMissingError if
    loading would fail for want of files, and `download(**options)`, which fetches them; without them the
    dataset is always available and `fetch` just loads it.
    """

    def decorator(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = _Entry(loader, default_size, description, check, download)
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


# ---------------------------------------------------------------------------------------------------------------------
# uint8 array caches: train.npy, train_labels.npy, test.npy, test_labels.npy and meta.json in one directory

ARRAYS = ("train", "train_labels", "test", "test_labels")


def _read_cache(directory: Path, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays, memory-mapped, or None if meta.json is missing or differs from `meta` on any of
    its keys, or an array is missing, unreadable or not of the shape meta.json records."""
    try:
        stored = json.loads((directory / "meta.json").read_text())
        if not isinstance(stored, dict) or any(stored.get(key) != value for key, value in meta.items()):
            return None
        # Copy-on-write pages: torch.from_numpy warns about read-only arrays, and writes must not reach the file.
        arrays = {key: np.load(directory / f"{key}.npy", mmap_mode="c") for key in ARRAYS}
        shapes = stored["shapes"]
        for key, array in arrays.items():
            dtype = np.int64 if key.endswith("labels") else np.uint8
            if list(array.shape) != shapes[key] or array.dtype != dtype:
                return None
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    return arrays


def _write_cache(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Writes the arrays, then meta.json (`meta` plus the shapes), which marks the cache complete."""
    try:
        (directory / "meta.json").unlink(missing_ok=True)  # until all arrays are rewritten
        for key in ARRAYS:
            atomic_numpy_save(arrays[key], directory / f"{key}.npy")
        shapes = {key: list(arrays[key].shape) for key in ARRAYS}
        atomic_write_json(directory / "meta.json", {**meta, "shapes": shapes})
    except OSError as error:
        reason = error.strerror or error
        raise BenchError(f"cannot write the dataset cache {directory}: {reason}; make it writable") from None


def _dataset(name: str, arrays: dict[str, np.ndarray], num_classes: int) -> Dataset:
    tensors = {key: torch.from_numpy(arrays[key]) for key in ARRAYS}
    train, test = tensors["train"], tensors["test"]
    return Dataset(name, train, test, tensors["train_labels"], tensors["test_labels"], num_classes)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images N×C×H×W resized to size×size (bilinear, antialiased), contiguous.

    torch's uint8 path (fixed-point, as Pillow's) is within one gray level of resizing as floats, and several
    times faster, which matters for CelebA's 200k images.
    """
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


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


@register("polygons", 28, "synthetic gray-scale convex polygons as in the paper (3–8 vertices, 6 classes), from a seed")
def polygons(image_size: int, *, seed: int = 0, n_train: int = 60000, n_test: int = 10000) -> Dataset:
    seed = _check_int("seed", seed, 0)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    directory = cache_dir() / "datasets" / f"polygons-s{image_size}-seed{seed}-n{n_train}-{n_test}"
    meta = {"version": POLYGONS_VERSION, "image_size": image_size, "seed": seed, "n_train": n_train, "n_test": n_test}
    arrays = _read_cache(directory, meta)
    if arrays is None:
        # Independent streams: the test set does not change with n_train.
        train_rng, test_rng = (np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(2))
        arrays = dict(zip(("train", "train_labels"), make_polygons(n_train, image_size, train_rng)))
        arrays.update(zip(("test", "test_labels"), make_polygons(n_test, image_size, test_rng)))
        _write_cache(directory, meta, arrays)
    return _dataset("polygons", arrays, num_classes=6)


# ---------------------------------------------------------------------------------------------------------------------
# image files: decoded, centre-cropped and resized in worker processes

# Worker processes, as threads would mostly wait for the GIL: two halved JPEG decoding time on two idle cores.
DECODE_WORKERS = 2
PARALLEL_MIN = 1000  # for fewer images, starting the workers costs about as much as they save
DECODE_BATCH = 64


class _UnreadableImage(Exception):
    """An image file that cannot be decoded; each dataset words its own error for it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason


def _square_image(path: Path, crop: int | None, size: int) -> torch.Tensor:
    """The RGB image at `path`, uint8 3×size×size: its centred crop×crop square (None: the largest), resized."""
    # PIL, as ImageFolder and CelebA read images: torchvision.io's decoders are deprecated since torchvision 0.29.
    image = torchvision.transforms.functional.pil_to_tensor(torchvision.datasets.folder.pil_loader(path))
    height, width = image.shape[1:]
    side = min(height, width) if crop is None else crop
    if side > min(height, width):
        raise ValueError(f"it is {width}×{height}, smaller than the {crop}×{crop} crop")
    image = torchvision.transforms.functional.center_crop(image, [side, side])
    return _resized(image[None], size)[0]


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as squares; an unreadable file gives an _UnreadableImage, passed on rather than raised
    because DataLoader workers re-raise exceptions with the traceback in the message."""

    def __init__(self, paths: list[Path], crop: int | None, size: int) -> None:
        self.paths, self.crop, self.size = paths, crop, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | _UnreadableImage:
        path = self.paths[index]
        try:
            return _square_image(path, self.crop, self.size)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            return _UnreadableImage(path, " ".join(str(error).split()))


def _stack(items: list[torch.Tensor | _UnreadableImage]) -> torch.Tensor | _UnreadableImage:
    bad = [item for item in items if isinstance(item, _UnreadableImage)]
    return bad[0] if bad else torch.stack(items)


def _decode_images(paths: list[Path], crop: int | None, size: int, description: str) -> np.ndarray:
    """uint8 N×3×size×size squares of the image files; raises _UnreadableImage for the first bad one."""
    files = _ImageFiles(paths, crop, size)
    workers = DECODE_WORKERS if len(paths) >= PARALLEL_MIN else 0
    batches = torch.utils.data.DataLoader(files, batch_size=DECODE_BATCH, num_workers=workers, collate_fn=_stack)
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    done = 0
    # One image's crop and resize is too small to share among threads, which then only contend: on two busy
    # cores, two threads made it 5-10× slower. (DataLoader workers run with one thread each anyway.)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(total=len(paths), desc=description, unit="image", disable=not sys.stderr.isatty()) as bar:
            for batch in batches:
                if isinstance(batch, _UnreadableImage):
                    raise batch
                images[done : done + len(batch)] = batch.numpy()
                done += len(batch)
                bar.update(len(batch))
    finally:
        torch.set_num_threads(threads)
    return images


# ---------------------------------------------------------------------------------------------------------------------
# mnist, fashion_mnist, cifar10, celeba: torchvision's files under data_root()

# Bump when decoding or resizing changes, so stale caches are rebuilt.
REAL_CACHE_VERSION = 1
PREFETCH_FIX = (
    'run "gan-bench prefetch STUDY.yaml" on a machine with internet, '
    "or set --data-root / GAN_BENCH_DATA to a folder that holds it"
)


class _Torchvision:
    """A dataset that a torchvision class reads from data_root(), cached under
    data_root()/gan-bench-cache/<name>-<size>/ beside its raw files.

    Subclasses say where the raw files are (`verify`) and how to decode a split (`decode`).
    """

    hint = ""  # added to missing-file errors; may use {root}

    def __init__(self, name: str, cls: type[torchvision.datasets.VisionDataset], num_classes: int) -> None:
        self.name, self.cls, self.num_classes = name, cls, num_classes

    @property
    def url(self) -> str:
        """Where torchvision downloads the files from, for error messages."""
        raise NotImplementedError

    def verify(self, root: Path) -> None:
        """Raises DatasetMissingError naming the first raw file under `root` that is missing or corrupt."""
        raise NotImplementedError

    def decode(self, root: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Split "train" or "test": images uint8 N×C×size×size and labels int64 (N,)."""
        raise NotImplementedError

    def error(self, root: Path, problem: str, fix: str = PREFETCH_FIX) -> DatasetMissingError:
        return DatasetMissingError(f"dataset {self.name!r}: {problem}; {fix}{self.hint.format(root=root)}",
                                   problem=f"dataset {self.name!r}: {problem}")

    def corrupt(self, root: Path, path: Path, reason: str) -> DatasetMissingError:
        return self.error(root, f"corrupt {path} ({reason})", "delete it, then " + PREFETCH_FIX)

    def _cache(self, size: int) -> tuple[Path, dict[str, Any]]:
        directory = data_root() / "gan-bench-cache" / f"{self.name}-{size}"
        source = f"torchvision.datasets.{self.cls.__name__}"
        meta = {"version": REAL_CACHE_VERSION, "name": self.name, "image_size": size, "source": source}
        return directory, meta

    def load(self, image_size: int) -> Dataset:
        directory, meta = self._cache(image_size)
        arrays = _read_cache(directory, meta)
        if arrays is None:
            root = data_root()
            self.verify(root)
            arrays = {}
            for split in ("train", "test"):
                arrays[split], arrays[f"{split}_labels"] = self.decode(root, split, image_size)
            _write_cache(directory, meta, arrays)
        return _dataset(self.name, arrays, self.num_classes)

    def check(self, image_size: int) -> None:
        directory, meta = self._cache(image_size)
        if _read_cache(directory, meta) is None:
            self.verify(data_root())

    def download(self) -> None:
        root = data_root()
        try:
            # The constructor's download skips files that are already there and checks the md5 sums; it then
            # decodes a split, which costs little next to the download.
            self.cls(str(root), download=True)
        except Exception as error:  # urllib, torchvision and gdown raise assorted exception types
            reason = " ".join(str(error).split()).rstrip(".")
            raise BenchError(
                f"dataset {self.name!r}: downloading from {self.url} into {root} failed: {reason}; "
                f"check the internet connection{self.hint.format(root=root)}"
            ) from None


class _Mnist(_Torchvision):
    IMAGE_SHAPE = (28, 28)

    @property
    def url(self) -> str:
        return self.cls.mirrors[0]

    def _idx_length(self, root: Path, path: Path, item_shape: tuple[int, ...]) -> int:
        """The item count of IDX file `path`, once its header and size are checked: torchvision checks no sum
        of the extracted files, and a truncated one would fail deep inside its reader."""
        if not path.is_file():
            raise self.error(root, f"missing {path}")
        ndim = 1 + len(item_shape)
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
        # Magic number: two zero bytes, the element type (8: uint8), the number of dimensions.
        if len(header) < 4 + 4 * ndim or header[:4] != bytes([0, 0, 8, ndim]):
            raise self.corrupt(root, path, f"not an IDX file of uint8 with {ndim} dimensions")
        dims = struct.unpack(f">{ndim}I", header[4:])
        if dims[1:] != item_shape:
            raise self.corrupt(root, path, f"items of shape {dims[1:]}, expected {item_shape}")
        expected, found = len(header) + math.prod(dims), path.stat().st_size
        if found != expected:
            raise self.corrupt(root, path, f"{found:,} bytes where its header says {expected:,}")
        return dims[0]

    def verify(self, root: Path) -> None:
        raw = root / self.cls.__name__ / "raw"  # as torchvision's MNIST.raw_folder
        for prefix in ("train", "t10k"):
            images = self._idx_length(root, raw / f"{prefix}-images-idx3-ubyte", self.IMAGE_SHAPE)
            labels_path = raw / f"{prefix}-labels-idx1-ubyte"
            labels = self._idx_length(root, labels_path, ())
            if labels != images:
                raise self.corrupt(root, labels_path, f"{labels:,} labels for {images:,} images")

    def decode(self, root: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.cls(str(root), train=split == "train")
        return _resized(dataset.data.unsqueeze(1), size).numpy(), dataset.targets.numpy()


class _Cifar10(_Torchvision):
    @property
    def url(self) -> str:
        return self.cls.url

    def verify(self, root: Path) -> None:
        cls = self.cls
        files = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
        for filename, md5 in files:
            path = root / cls.base_folder / filename
            if not path.is_file():
                raise self.error(root, f"missing {path}")
            # The check the CIFAR-10 class itself calls, by the same name.
            if not torchvision.datasets.cifar.check_integrity(str(path), md5):
                raise self.corrupt(root, path, "its md5 sum is not the one torchvision expects")

    def decode(self, root: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.cls(str(root), train=split == "train")
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # torchvision gives N×H×W×C
        return _resized(images, size).numpy(), np.asarray(dataset.targets, dtype=np.int64)


class _CelebA(_Torchvision):
    CROP = 160  # the usual centred face crop of the 178×218 aligned images
    hint = (
        " (torchvision downloads CelebA from Google Drive, which is often rate-limited: the files can also be "
        "placed by hand under {root}/celeba/, i.e. img_align_celeba/ and the list_*.txt and identity_CelebA.txt files)"
    )

    @property
    def url(self) -> str:
        return "Google Drive (the file ids in torchvision.datasets.CelebA.file_list)"

    def verify(self, root: Path) -> None:
        folder = root / self.cls.base_folder
        for _, md5, filename in self.cls.file_list:
            if filename.endswith(".zip"):
                continue  # torchvision only needs the extracted images
            path = folder / filename
            if not path.is_file():
                raise self.error(root, f"missing {path}")
            # The check the CelebA class itself calls, by the same name.
            if not torchvision.datasets.celeba.check_integrity(str(path), md5):
                raise self.corrupt(root, path, "its md5 sum is not the one torchvision expects")
        images = folder / "img_align_celeba"
        if not images.is_dir():
            raise self.error(root, f"missing {images}")
        # A half-extracted archive is the likely mishap when the files are placed by hand; torchvision does
        # not look, and listing the folder is quick next to decoding it.
        lines = (folder / "list_eval_partition.txt").read_text().splitlines()
        listed = [fields[0] for fields in map(str.split, lines) if fields]
        absent = sorted(set(listed) - set(os.listdir(images)))
        if absent:
            more = f" and {len(absent) - 1:,} more of the {len(listed):,} images" if len(absent) > 1 else ""
            raise self.error(root, f"missing {images / absent[0]}{more}")

    def decode(self, root: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.cls(str(root), split=split, target_type=[])
        folder = root / self.cls.base_folder / "img_align_celeba"
        try:
            images = _decode_images([folder / name for name in dataset.filename], self.CROP, size, f"celeba {split}")
        except _UnreadableImage as bad:
            fix = f"extract it again from img_align_celeba.zip, or delete {folder} and {PREFETCH_FIX}"
            raise self.error(root, f"corrupt {bad.path} ({bad.reason})", fix) from None
        # CelebA has no classes: the domain classifier behind FID features cannot be trained on it.
        return images, np.zeros(len(images), dtype=np.int64)


def _register_torchvision(dataset: _Torchvision, default_size: int, description: str) -> None:
    register(dataset.name, default_size, description, check=dataset.check, download=dataset.download)(dataset.load)


_register_torchvision(
    _Mnist("mnist", torchvision.datasets.MNIST, num_classes=10),
    28,
    "MNIST handwritten digits: 28×28 gray, 60k/10k, 10 classes",
)
_register_torchvision(
    _Mnist("fashion_mnist", torchvision.datasets.FashionMNIST, num_classes=10),
    28,
    "Fashion-MNIST clothing: 28×28 gray, 60k/10k, 10 classes",
)
_register_torchvision(
    _Cifar10("cifar10", torchvision.datasets.CIFAR10, num_classes=10),
    32,
    "CIFAR-10 photos: 32×32 RGB, 50k/10k, 10 classes",
)
_register_torchvision(
    _CelebA("celeba", torchvision.datasets.CelebA, num_classes=0),
    64,
    "CelebA aligned faces: centred 160×160 crop resized, RGB, 162,770/19,962 (train/test partitions), no classes",
)


# ---------------------------------------------------------------------------------------------------------------------
# folder: any ImageFolder-style directory, cached under cache_dir() because the folder may be read-only

FOLDER_SEED = 0  # of the train/test split
FOLDER_FIX = "set the option path to an ImageFolder-style directory: one subfolder of images per class"


def _image_folder(path: str | os.PathLike | None) -> torchvision.datasets.ImageFolder:
    """The listing of the folder (nothing decoded), with at least two images for a train/test split."""
    if path is None:
        raise BenchError(f"dataset 'folder' needs the option path; {FOLDER_FIX}")
    if not isinstance(path, (str, os.PathLike)):
        raise BenchError(f"option path of dataset 'folder' must be a string, got {path!r}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        problem = "is not a directory" if folder.exists() else "does not exist"
        raise DatasetMissingError(f"dataset 'folder': {folder} {problem}; {FOLDER_FIX}")
    try:
        listing = torchvision.datasets.ImageFolder(str(folder))
    except FileNotFoundError as error:  # no class folders, or one without images
        reason = " ".join(str(error).split())
        raise DatasetMissingError(f"dataset 'folder': {folder}: {reason}; {FOLDER_FIX}") from None
    if len(listing.samples) < 2:
        raise DatasetMissingError(f"dataset 'folder': {folder} holds a single image; a train/test split needs two")
    return listing


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise BenchError(f"option test_fraction of dataset 'folder' must be a number in (0, 1), got {value!r}")
    return float(value)


def _listing_fingerprint(folder: Path) -> str:
    """A hash of every file's relative path, size and modification time: it changes when the folder does."""
    digest = hashlib.sha256()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories.sort()  # os.walk visits them in this order
        for name in sorted(files):
            path = Path(directory, name)
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _check_folder(image_size: int, *, path: str | None = None, test_fraction: float = 0.1) -> None:
    _image_folder(path)
    _check_fraction(test_fraction)


@register(
    "folder",
    64,
    "an ImageFolder-style directory (option path; one subfolder per class): centred square crop resized, RGB",
    check=_check_folder,
)
def folder(image_size: int, *, path: str | None = None, test_fraction: float = 0.1) -> Dataset:
    listing = _image_folder(path)
    fraction = _check_fraction(test_fraction)
    source = Path(listing.root).resolve()
    fingerprint = _listing_fingerprint(source)
    key = hashlib.sha256(json.dumps([str(source), fingerprint, fraction]).encode()).hexdigest()[:12]
    directory = cache_dir() / "datasets" / f"folder-{key}-{image_size}"
    meta = {
        "version": REAL_CACHE_VERSION,
        "name": "folder",
        "image_size": image_size,
        "source": str(source),
        "listing": fingerprint,
        "test_fraction": fraction,
    }
    arrays = _read_cache(directory, meta)
    if arrays is None:
        samples = listing.samples  # (path, class index), sorted by class then path
        n_test = min(max(round(len(samples) * fraction), 1), len(samples) - 1)
        order = np.random.RandomState(FOLDER_SEED).permutation(len(samples))
        arrays = {}
        for split, indices in (("train", np.sort(order[n_test:])), ("test", np.sort(order[:n_test]))):
            paths = [Path(samples[i][0]) for i in indices]
            try:
                arrays[split] = _decode_images(paths, None, image_size, f"folder {split}")
            except _UnreadableImage as bad:
                problem = f"cannot read {bad.path} ({bad.reason})"
                raise DatasetMissingError(f"dataset 'folder': {problem}; repair or remove it") from None
            arrays[f"{split}_labels"] = np.array([samples[i][1] for i in indices], dtype=np.int64)
        _write_cache(directory, meta, arrays)
    return _dataset("folder", arrays, num_classes=len(listing.classes))
