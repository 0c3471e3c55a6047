"""The Optuna journal file as gan-bench writes it: appends that leave no torn record, a lock the kernel releases when
its holder dies, and finding and repairing the damage a crash left anyway."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import optuna

from bench import BenchError
from bench.io import atomic_write_bytes, open_lock_file


class JournalFlock:
    """The journal's write lock (Optuna's lock interface: acquire, release) as an flock on a file beside it.

    Optuna's default lock (a symlink) is taken and given back by Python code: a worker that SIGTERM stops inside it
    can remove another process's lock or turn its SystemExit into a FileNotFoundError (seen in CI: a trial marked
    failed and lost to the resume), and a process killed while holding it blocks every writer for 30 s. An flock is
    one system call each way, and the kernel releases it when its process dies."""

    def __init__(self, path: Path):
        self._path = path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        handle = open_lock_file(self._path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # which releases the lock


class JournalBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file whose appends leave no partial record: an append that fails midway (a full disk, a quota)
    is cut off again before the lock is released, so the next writer does not append after a torn record (which would
    damage the journal for good), and the error goes on up (an EnvironmentFault to the run). A journal removed while
    the study runs is not made again."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self._lock.acquire()
        try:
            # Not created here (the backend creates it when it opens): a journal removed mid-run is an error of the
            # environment, not an empty journal to start again, whose records would name trials it never had.
            try:
                descriptor = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            except OSError as error:
                raise OSError(error.errno, error.strerror, self._file_path) from error
            try:
                start = os.lseek(descriptor, 0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(descriptor, view):]
                    os.fsync(descriptor)
                except OSError as error:
                    with contextlib.suppress(OSError):
                        os.ftruncate(descriptor, start)
                    raise OSError(error.errno, error.strerror, self._file_path) from error
            finally:
                os.close(descriptor)
        finally:
            self._lock.release()


def open_journal(path: Path) -> optuna.storages.JournalStorage:
    """The journal file as an Optuna storage, refused in one line if a damaged record has others after it (a torn
    last record does not stop readers; the driver's `repair_journal` cuts it off)."""
    damage = journal_damage(path)
    if damage is not None and not damage[2]:
        raise BenchError(damaged_journal(path, damage[0]))
    backend = JournalBackend(str(path), lock_obj=JournalFlock(path.with_name(path.name + ".flock")))
    return optuna.storages.JournalStorage(backend)


def journal_damage(path: Path) -> tuple[int, int, bool] | None:
    """The first record of a journal file that is not one whole JSON line, as (line number, byte offset, whether it
    is the last line); None if every record is whole."""
    if not path.is_file():
        return None
    offset, damage = 0, None
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if damage is not None:
                return damage[0], damage[1], False
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no line end")
                json.loads(line)
            except ValueError:
                damage = (number, offset)
            offset += len(line)
    return None if damage is None else (damage[0], damage[1], True)


def repair_journal(path: Path) -> None:
    """Cuts off a last record that a crash or a full disk left half-written (Optuna would append the next one to it,
    which damages the journal for good); the records before it, every finished trial among them, are kept, and the
    cut bytes saved beside it. A damaged record followed by others cannot be repaired safely: one line says so."""
    damage = journal_damage(path)
    if damage is None:
        return
    line, offset, last = damage
    if not last:
        raise BenchError(damaged_journal(path, line))
    data = path.read_bytes()
    atomic_write_bytes(path.with_name(path.name + ".torn"), data[offset:])
    with open(path, "r+b") as handle:
        handle.truncate(offset)
        os.fsync(handle.fileno())
    print(f"gan-bench: {path}: its last record (line {line}) was cut short by a crash; removed it (saved in "
          f"{path.name}.torn), the {line - 1} records before it are kept", file=sys.stderr, flush=True)


def damaged_journal(path: Path, line: int) -> str:
    """The one line that refuses a journal damaged before its last record, and says how to keep what is whole."""
    return (f"{path}: record {line} is damaged and later records follow it; keep a copy of the file, then keep the "
            f"records before it (head -n {line - 1} {path} > {path}.kept && mv {path}.kept {path}) or run the "
            "study into another --results folder")
