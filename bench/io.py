"""Where gan-bench keeps its caches, and atomic writes so that a crash never leaves a half-written file."""

from __future__ import annotations

import json
import os
import secrets
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


def _new_temporary(path: Path) -> Path:
    """A new empty file beside `path` with the mode that `open(path, "w")` would give it.

    Not tempfile.mkstemp: it creates files 0600, which the others of a group sharing a results or data folder cannot
    read. Created with 0666, the file gets what the kernel gives any new file: 0666 less the umask (0644 under 022,
    0664 under 002), or the directory's default ACL. The umask is never read: os.umask can only read it by setting
    it, which for that moment changes it for every thread of the process (a file another thread creates then would
    be world-writable), and a mode computed from it would override a default ACL.
    """
    for _ in range(tempfile.TMP_MAX):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another writer's temporary file: draw another name, as mkstemp does
            continue
        return tmp
    raise FileExistsError(f"no free temporary file name beside {path}")


def adopt_default_mode(folder: Path) -> None:
    """Gives every file under `folder` that a library created 0600 (tempfile's way: torch-fidelity's feature cache,
    gdown's CelebA download) the mode a new file gets here, as `_new_temporary` does: that of a probe file created
    beside it with 0666, i.e. the umask or the folder's default ACL. Files of other modes are left as they are."""
    for path in Path(folder).rglob("*"):
        try:
            info = path.lstat()
        except FileNotFoundError:  # another process's temporary file, renamed meanwhile
            continue
        if not path.is_file() or path.is_symlink() or info.st_mode & 0o777 != 0o600 or info.st_uid != os.getuid():
            continue
        probe = _new_temporary(path)
        try:
            mode = probe.stat().st_mode & 0o777
        finally:
            probe.unlink()
        if mode != 0o600:
            os.chmod(path, mode)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Writes `path` through `write(tmp)` into a temporary file beside it, then renames that over `path`: readers
    see the old file or the new one, never a part, and a failure (or an interrupt) leaves the old one and no
    temporary file. `write` must write into the file it is given (it keeps that file's mode), not replace it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(data))


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
