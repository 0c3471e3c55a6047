"""Where gan-bench keeps its caches, and atomic writes so that a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from bench import EnvironmentFault


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
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        cause = next((c for c in _causes(error) if isinstance(c, OSError) and c.errno is not None), None)
        if cause is not None and not cause.filename:  # a write's error names no file: name the one being written
            raise OSError(cause.errno, cause.strerror, str(path)) from error
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

    import torch  # here, not at the top: what only reads a results folder (the report) must not need or wait for torch

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


# What the machine, not the trial, does wrong when a write or read of the results folder, a cache or the journal fails:
# no space or quota left, an I/O error (a bad disk or NFS block, a stale NFS handle), a folder made read-only or
# removed, a file grown past the file system's limit.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                                errno.ESTALE, errno.EFBIG, errno.ENOENT})


def free_space(path: Path | str) -> str:
    """The space free for this user on the file system that holds `path` (or its nearest existing folder), in words."""
    place = Path(path)
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return "free space unknown"
    return f"{human_bytes(free)} free"


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it: torch.save reports a failed write as RuntimeError("unexpected pos"), raised while
    handling the OSError of the file's write."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _database_connection_error(error: BaseException) -> bool:
    """SQLAlchemy's error for a connection lost or refused (a server restarted or gone), told by name: io does not
    import SQLAlchemy."""
    return type(error).__module__.startswith("sqlalchemy") and type(error).__name__ in ("OperationalError",
                                                                                      "InterfaceError")


def lost_connection(error: BaseException) -> bool:
    """Whether `error` is, or was caused by, a lost or refused database connection."""
    return any(_database_connection_error(cause) for cause in _causes(error))


def environment_fault(error: BaseException, where: Path | str | None = None) -> EnvironmentFault | None:
    """The EnvironmentFault that `error` is, in one line (the file, or `where` if the error names none; what failed;
    the space left there), or None if it is the trial's own failure. A lost database connection (SQLAlchemy's
    OperationalError: a server restarted or gone) is one too; so is an EnvironmentFault itself."""
    for cause in _causes(error):
        if isinstance(cause, EnvironmentFault):
            return cause
        if isinstance(cause, OSError) and cause.errno in ENVIRONMENT_ERRNOS:
            where = cause.filename or where or "a file"
            name = errno.errorcode.get(cause.errno, str(cause.errno))
            return EnvironmentFault(f"{where}: {cause.strerror} ({name}); {free_space(where)} there")
        if _database_connection_error(cause):
            reason = " ".join(str(getattr(cause, "orig", None) or cause).split())[:300]
            return EnvironmentFault(f"the study's database connection failed ({reason})")
    return None


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """An exclusive flock for building (or checking and rebuilding) the cache at `cache`, while the block runs; the
    kernel releases it if the process dies, so two processes build one cache once. The lock files live apart, in
    `<cache root>/locks/`, so that a cache folder holds only its caches (and a lock is not moved aside with them)."""
    cache = Path(cache).resolve()
    digest = hashlib.sha1(str(cache).encode()).hexdigest()[:12]
    path = cache_dir() / "locks" / f"{cache.name}-{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_lock_file(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_lock_file(path: Path) -> IO[bytes]:
    """A lock file, created if needed, opened read-only: an flock needs no write access, and a file held open for
    writing would keep its file system from being remounted read-only."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o666), "rb")


def move_aside(path: Path, reason: str, rebuilt: bool = True) -> Path:
    """Renames a damaged file (or folder) to `<name>.damaged` (replacing an older one), so that it can still be looked
    at; one that is `rebuilt` here is said so in one line on stderr (one that cannot be, the caller refuses in its own
    line)."""
    damaged = path.with_name(path.name + ".damaged")
    if damaged.is_dir() and not damaged.is_symlink():
        shutil.rmtree(damaged)
    os.replace(path, damaged)
    if rebuilt:
        print(f"gan-bench: {path}: damaged ({reason}); moved to {damaged.name}, rebuilding it", file=sys.stderr,
              flush=True)
    return damaged


def damage_reason(error: BaseException) -> str:
    """Why a file did not read back, in a few words (the error's type, and its message cut at a word)."""
    message = " ".join(str(error).split())
    return textwrap.shorten(f"{type(error).__name__}: {message}" if message else type(error).__name__, 200,
                            placeholder=" …")


def cache_note(cache: Path) -> Path:
    """A small file kept apart from a cache (in `<cache root>/notes/`, by the cache's name, which says what it holds)
    with how it was built: what the cache's own record says too, for when that record is damaged."""
    return cache_dir() / "notes" / f"{Path(cache).name}.json"


def folder_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._+-] replaced by "_": a custom loss `pkg.mod:fn` must not put a
    ':' (which breaks tools, PATH-like lists and SLURM's file patterns) into a trial folder's name."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)
