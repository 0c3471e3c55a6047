"""The uint8 array caches: train.npy, train_labels.npy, test.npy, test_labels.npy and meta.json in one directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import BenchError
from bench.data import Dataset
from bench.io import atomic_numpy_save, atomic_write_json

# Bump when decoding or resizing changes, so stale caches of the datasets decoded from files are rebuilt.
REAL_CACHE_VERSION = 1
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


def _dataset(name: str, arrays: dict[str, np.ndarray], num_classes: int, resize: str) -> Dataset:
    tensors = {key: torch.from_numpy(arrays[key]) for key in ARRAYS}
    train, test = tensors["train"], tensors["test"]
    return Dataset(name, train, test, tensors["train_labels"], tensors["test_labels"], num_classes, resize)

