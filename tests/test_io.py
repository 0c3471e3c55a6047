"""Atomic writes: files get the mode an ordinary open() would give them under the user's umask, so that a group
sharing a results or data folder can read them, and a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from bench.io import adopt_default_mode, atomic_numpy_save, atomic_torch_save, atomic_write_json, atomic_write_text

WRITERS: dict[str, Callable[[Path, Any], None]] = {
    "text": atomic_write_text,
    "json": atomic_write_json,
    "torch": lambda path, obj: atomic_torch_save(obj, path),
    "numpy": lambda path, obj: atomic_numpy_save(obj, path),
}
GOOD = {"text": "hello\n", "json": {"a": 1}, "torch": {"w": torch.ones(2)}, "numpy": np.arange(3)}
# Objects that fail half-way through the write, once the temporary file exists: not str, not picklable.
BAD = {"text": 123, "torch": {"f": lambda: 0}, "numpy": np.array([lambda: 0], dtype=object)}


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request: pytest.FixtureRequest) -> int:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("kind", WRITERS)
def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path, umask: int, kind: str) -> None:
    path = tmp_path / "sub" / f"out.{kind}"
    WRITERS[kind](path, GOOD[kind])
    with open(tmp_path / "plain", "w"):
        pass
    assert mode(path) == 0o666 & ~umask == mode(tmp_path / "plain")  # 0644 under 022, 0664 under 002
    assert os.listdir(path.parent) == [path.name]  # no temporary file left


@pytest.mark.parametrize("kind", BAD)
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"out.{kind}"
    WRITERS[kind](path, GOOD[kind])
    before = path.read_bytes()
    with pytest.raises(Exception):
        WRITERS[kind](path, BAD[kind])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(obj: Any, f: Any) -> None:
        f.write(b"half an archive")
        raise KeyboardInterrupt

    path = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.ones(2)}, path)
    assert os.listdir(tmp_path) == []


def test_files_a_library_created_0600_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    """torch-fidelity's feature cache and gdown's downloads are written through tempfile (0600)."""
    (tmp_path / "sub").mkdir()
    made = []
    for folder in (tmp_path, tmp_path / "sub"):
        handle, name = tempfile.mkstemp(dir=folder)
        os.close(handle)
        made.append(Path(name))
    chosen = tmp_path / "chosen"
    chosen.write_text("x")
    os.chmod(chosen, 0o640)  # a mode someone chose is kept
    assert {mode(p) for p in made} == {0o600}
    adopt_default_mode(tmp_path)
    assert {mode(p) for p in made} == {0o666 & ~umask} and mode(chosen) == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["sub", "chosen", *(p.name for p in made)])
