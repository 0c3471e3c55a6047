"""folder: any ImageFolder-style directory of images, decoded once into a uint8 cache under cache_dir(), not beside
the images, because the folder may be read-only."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torchvision

from bench import BenchError
from bench.data.base import Dataset, DatasetMissingError, register
from bench.data.cache import REAL_CACHE_VERSION, _dataset, cached_arrays
from bench.data.images import DEFAULT_RESIZE, _check_resize, _decode_images, _UnreadableImage
from bench.io import cache_dir

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


def _check_folder(
    image_size: int, *, path: str | None = None, test_fraction: float = 0.1, resize: str = DEFAULT_RESIZE
) -> None:
    _image_folder(path)
    _check_fraction(test_fraction)
    _check_resize("folder", resize)


@register(
    "folder",
    64,
    "an ImageFolder-style directory (option path; one subfolder per class): centred square crop resized (option "
    "resize), RGB",
    channels=3,
    check=_check_folder,
)
def folder(
    image_size: int, *, path: str | None = None, test_fraction: float = 0.1, resize: str = DEFAULT_RESIZE
) -> Dataset:
    listing = _image_folder(path)
    fraction = _check_fraction(test_fraction)
    resize = _check_resize("folder", resize)
    source = Path(listing.root).resolve()
    fingerprint = _listing_fingerprint(source)
    key = hashlib.sha256(json.dumps([str(source), fingerprint, fraction]).encode()).hexdigest()[:12]
    name = f"folder-{key}-{image_size}"
    meta = {
        "version": REAL_CACHE_VERSION,
        "name": "folder",
        "image_size": image_size,
        "source": str(source),
        "listing": fingerprint,
        "test_fraction": fraction,
    }
    if resize != DEFAULT_RESIZE:
        # A folder of its own, so that the two resizes never share a cache; named and recorded only then, so that
        # the caches made before resize was an option stay valid.
        name += f"-{resize}"
        meta["resize"] = resize
    directory = cache_dir() / "datasets" / name

    def build() -> dict[str, np.ndarray]:
        samples = listing.samples  # (path, class index), sorted by class then path
        n_test = min(max(round(len(samples) * fraction), 1), len(samples) - 1)
        order = np.random.RandomState(FOLDER_SEED).permutation(len(samples))
        arrays = {}
        for split, indices in (("train", np.sort(order[n_test:])), ("test", np.sort(order[:n_test]))):
            paths = [Path(samples[i][0]) for i in indices]
            try:
                arrays[split] = _decode_images(paths, None, image_size, resize, f"folder {split}")
            except _UnreadableImage as bad:
                problem = f"cannot read {bad.path} ({bad.reason})"
                raise DatasetMissingError(f"dataset 'folder': {problem}; repair or remove it") from None
            arrays[f"{split}_labels"] = np.array([samples[i][1] for i in indices], dtype=np.int64)
        return arrays

    arrays = cached_arrays(directory, meta, build)
    # The method even where every image happens to be image_size already (then both methods are the identity):
    # the images of a folder have no one native size, and the method is what a FID protocol must tell apart.
    return _dataset("folder", arrays, num_classes=len(listing.classes), resize=resize)
