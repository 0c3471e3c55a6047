"""Where gan-bench keeps its caches, and atomic writes so that a crash never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def cache_dir() -> Path:
    """The cache root: $GAN_BENCH_CACHE, else ~/.cache/gan-bench."""
    root = os.environ.get("GAN_BENCH_CACHE") or Path.home() / ".cache" / "gan-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save, atomically, the same bytes for the same object: saved through an open file, the archive inside is
    named "archive" rather than after the random temporary file (a weights file's hash names its FID protocol)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    _atomic(path, write)


def atomic_numpy_save(array: np.ndarray, path: Path) -> None:
    """Saves a .npy file (memory-mappable with np.load(mmap_mode='r'))."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    _atomic(path, write)
