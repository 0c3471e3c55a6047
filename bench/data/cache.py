"""The uint8 array caches: train.npy, train_labels.npy, test.npy, test_labels.npy and meta.json in one directory."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench import BenchError
from bench.data.base import Dataset
from bench.io import atomic_numpy_save, atomic_write_json, cache_lock, damage_reason, environment_fault, move_aside

# Bump when decoding or resizing changes, so stale caches of the datasets decoded from files are rebuilt.
REAL_CACHE_VERSION = 1
ARRAYS = ("train", "train_labels", "test", "test_labels")


class _Damaged(Exception):
    """A cache that was written whole once and no longer reads back (a node killed mid-copy, a full disk, a bad
    block)."""


def _read_cache(directory: Path, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays, memory-mapped, or None if there is no cache or it was made for another `meta` (another
    version of the decoding: rebuilt). A damaged cache (meta.json or an array that does not read back as meta.json
    records it) is moved aside to `<folder>.damaged`, said in one line, and None is returned: the caller rebuilds it.
    The caller holds the cache's lock."""
    if not (directory / "meta.json").exists():
        return None
    try:
        stored = json.loads((directory / "meta.json").read_text())
        if not isinstance(stored, dict):
            raise _Damaged("meta.json is not a JSON object")
        if any(stored.get(key) != value for key, value in meta.items()):
            return None
        # Copy-on-write pages: torch.from_numpy warns about read-only arrays, and writes must not reach the file.
        arrays = {key: np.load(directory / f"{key}.npy", mmap_mode="c") for key in ARRAYS}
        shapes = stored["shapes"]
        for key, array in arrays.items():
            dtype = np.int64 if key.endswith("labels") else np.uint8
            if list(array.shape) != shapes[key] or array.dtype != dtype:
                raise _Damaged(f"{key}.npy is {array.dtype} {list(array.shape)}, meta.json says {shapes[key]}")
    except (_Damaged, OSError, ValueError, EOFError, KeyError, TypeError) as error:
        if (fault := environment_fault(error)) is not None and not isinstance(error, FileNotFoundError):
            raise fault from None  # the disk failed us now, not the cache earlier: nothing to rebuild
        move_aside(directory, damage_reason(error))
        return None
    return arrays


def cached_arrays(directory: Path, meta: dict[str, Any],
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached in `directory` for `meta`, built by `build()` and cached first if there are none (or they
    were damaged). One process builds a cache at a time (a lock beside it): two workers that find the same cache
    missing or damaged build it once."""
    with cache_lock(directory):
        arrays = _read_cache(directory, meta)
        if arrays is None:
            arrays = build()
            _write_cache(directory, meta, arrays)
    return arrays


def cache_readable(directory: Path, meta: dict[str, Any]) -> bool:
    """Whether the cache is there and whole (a damaged one is moved aside, as `_read_cache` does)."""
    with cache_lock(directory):
        return _read_cache(directory, meta) is not None


def _write_cache(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Writes the arrays, then meta.json (`meta` plus the shapes), which marks the cache complete."""
    try:
        (directory / "meta.json").unlink(missing_ok=True)  # until all arrays are rewritten
        for key in ARRAYS:
            atomic_numpy_save(arrays[key], directory / f"{key}.npy")
        shapes = {key: list(arrays[key].shape) for key in ARRAYS}
        atomic_write_json(directory / "meta.json", {**meta, "shapes": shapes})
    except OSError as error:
        if (fault := environment_fault(error)) is not None and error.errno not in (errno.EACCES, errno.EPERM,
                                                                                   errno.EROFS):
            raise fault from None  # full, or failing: the run stops and resumes later
        reason = error.strerror or error
        raise BenchError(f"cannot write the dataset cache {directory}: {reason}; make it writable") from None


def _dataset(name: str, arrays: dict[str, np.ndarray], num_classes: int, resize: str) -> Dataset:
    tensors = {key: torch.from_numpy(arrays[key]) for key in ARRAYS}
    train, test = tensors["train"], tensors["test"]
    return Dataset(name, train, test, tensors["train_labels"], tensors["test_labels"], num_classes, resize)

