"""The results folder: its layout, the lock of the one driver that runs it, whether it can be written, and which study
it may hold (the study it was made for, or that study grown).

Everything gan-bench writes about a study sits in one folder, by default `results/<name>/`:

    study.yaml          the study as it last ran (what a changed study is compared with)
    results.csv         one row per trial, seed and evaluation: a view of the storage, written again at will
    trials/             each run's folder (checkpoint, samples, result.json); a confirm stage's under trials/confirm/
    optuna.journal      the default storage (with its .flock and, after a repair, .torn beside it)
    .study-id           the folder's id, by which the storage knows its owner (bench.storage)
    .driver.lock/.json  the driver's lock, and who holds it
    .claim.lock         the workers' lock while one claims a trial
    slurm/              submitit's logs and jobs.json, the array jobs submitted for this folder
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from bench import BenchError
from bench.io import atomic_write_json, atomic_write_text, folder_name, open_lock_file
from bench.registry import SEARCH_PATH_VARIABLE, add_search_path

if TYPE_CHECKING:  # bench.study imports the datasets and models: not needed to read a folder's layout
    from bench.study import Study

STUDY_FILE = "study.yaml"
# The folders the study's extensions (package.module:name) were imported from, beside the study file: `status`,
# `report` and a confirm stage read the study from anywhere.
EXTENSION_PATH = "extension-path.txt"
RESULTS_FILE = "results.csv"
TRIALS = "trials"
JOURNAL = "optuna.journal"
FOLDER_ID = ".study-id"
CLAIM_LOCK = ".claim.lock"
# One driver per results folder: a second one would take the first one's running trials for dead ones, queue them
# again and run them twice. It holds an exclusive lock on this file while it runs (released by the kernel however it
# ends) and says who it is in DRIVER.
DRIVER_LOCK, DRIVER = ".driver.lock", ".driver.json"
SLURM = "slurm"


class Part(Protocol):
    """Where a run belongs: a stage of one (dataset, loss) (a bench.plan.PlannedPart, which imports this module)."""

    stage: str
    dataset: str
    loss: str


def trial_dir(results_dir: Path, part: Part, sample: int, seed: int) -> Path:
    """The folder of one run: a sample of a part, trained with one seed."""
    dataset, loss = folder_name(part.dataset), folder_name(part.loss)  # a custom one's package.module:name has a ':'
    if part.stage == "search":
        return results_dir / TRIALS / f"{dataset}-{loss}-{sample:04d}-seed{seed}"
    return results_dir / TRIALS / part.stage / f"{dataset}-{loss}-seed{seed}"


def slurm_dir(results_dir: Path) -> Path:
    """submitit's folder of logs, unless the study's executor.log_dir names another."""
    return results_dir / SLURM


def jobs_file(results_dir: Path) -> Path:
    """The list of array jobs submitted for this folder (here whatever executor.log_dir says)."""
    return results_dir / SLURM / "jobs.json"


def write_study(results_dir: Path, study: Study) -> None:
    """Saves the study as it runs now (what the next run of this folder is compared with) and where its extensions
    are imported from."""
    import yaml

    atomic_write_text(results_dir / STUDY_FILE, yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    atomic_write_text(results_dir / EXTENSION_PATH, os.environ.get(SEARCH_PATH_VARIABLE, "") + "\n")


def read_study(results_dir: Path) -> Study:
    """The study a results folder holds, its extensions imported from where its run found them (a StudyError names
    the file and the field)."""
    from bench.study import load_study

    recorded = results_dir / EXTENSION_PATH
    for folder in (recorded.read_text().strip().split(os.pathsep) if recorded.is_file() else []):
        if folder:
            add_search_path(Path(folder))
    return load_study(results_dir / STUDY_FILE)


def check_writable(folder: Path, flag: str) -> None:
    """Refuses, before any work, an output folder that cannot be made: a file in its place, or a nearest existing
    folder this user cannot write in. Tried for real with a probe file, since os.access says yes to root on a
    read-only file system and knows nothing of ACLs or quotas."""
    import tempfile

    existing = folder
    try:
        # The folder itself if it exists, else the ancestor that mkdir would write in (`.` if the working folder is
        # gone: the probe then fails).
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            what = "is a file" if existing == folder else f"is inside {existing}, a file"
            raise BenchError(f"{folder}: {what}, not a folder; choose another folder with {flag}")
        descriptor, probe = tempfile.mkstemp(prefix=".gan-bench-probe-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise BenchError(f"{folder}: cannot write in {existing} ({error.strerror}); choose another folder with "
                         f"{flag}") from None


# ---------------------------------------------------------------------------------------------------------------------
# The driver


@contextlib.contextmanager
def driving(results_dir: Path) -> Iterator[None]:
    """Holds the results folder for this command while it drives the study; one line (BenchError) if another
    `gan-bench run` holds it."""
    with open_lock_file(results_dir / DRIVER_LOCK) as handle:
        deadline = time.monotonic() + 2.0  # a `status` probing the lock holds it for microseconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BenchError(second_driver(results_dir)) from None
                time.sleep(0.1)
        atomic_write_json(results_dir / DRIVER, {"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield


def second_driver(results_dir: Path) -> str:
    """The one line that refuses a second driver."""
    return (f"{results_dir}: another gan-bench run drives this study ({_driver(results_dir)}); follow it with "
            f"`gan-bench status {results_dir} --wait`, or stop it and run this command again")


def _driver(results_dir: Path) -> str:
    try:
        who = json.loads((results_dir / DRIVER).read_text())
        return f"pid {who['pid']} on {who['host']}, since {who['started']}"
    except (OSError, ValueError, KeyError):
        return "its details are unknown"


def driver_running(results_dir: Path) -> bool:
    """Whether a `gan-bench run` drives the study in `results_dir` now (on any host that shares the lock)."""
    try:
        handle = open(results_dir / DRIVER_LOCK)
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def claiming(results_dir: Path) -> Iterator[None]:
    """Holds the folder's claim lock: one worker at a time picks its next trial, so none is run twice."""
    with open_lock_file(results_dir / CLAIM_LOCK) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------------------
# Which study the folder may hold

# What a study with results may change: where it runs, and a confirm stage added later.
FREE_FIELDS = ("executor", "data_root", "stages")
# Fields keyed by dataset or by loss: an entry for a dataset or loss added to the study is growth.
PER_DATASET = ("tasks", "losses_per_dataset", "dataset_options", "model_per_dataset", "budget.steps",
               "budget.eval_every", "budget.evaluations")
PER_LOSS = ("loss_search_space", "loss_defaults", "variants")
_ABSENT = object()  # a field one of two studies compared does not have

Change = tuple[str, Any, Any]  # (dotted field, old value, new value)


def _differences(old: Any, new: Any, path: str = "") -> Iterator[Change]:
    """Every field that differs, dict entries one by one."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{path}.{key}" if path else key)
    elif old != new:
        yield path, old, new


def _growth(field: str, old: Any, new: Any, before: dict[str, Any]) -> bool:
    """Whether a difference only adds to the study: trials of its own, none of the existing ones changed."""
    if field in ("datasets", "losses", "seeds") or (field.startswith("losses_per_dataset.") and old is not _ABSENT):
        return isinstance(new, list) and all(value in new for value in old)
    if field == "budget.samples":
        return new >= old
    parent, _, key = field.rpartition(".")
    if old is _ABSENT and parent in PER_DATASET:
        return key not in before["datasets"]
    return old is _ABSENT and parent in PER_LOSS and key not in before["losses"]


def changes(before: dict[str, Any], now: dict[str, Any]) -> list[Change]:
    """The fields in which study `now` differs from `before` (both as model_dump(mode="json")) other than by
    growing."""
    before, now = dict(before), dict(now)
    for key in FREE_FIELDS:
        before.pop(key, None), now.pop(key, None)
    for key in ("steps", "eval_every", "evaluations"):  # one number for all, the other one per dataset: by dataset
        if {type(before["budget"].get(key)), type(now["budget"].get(key))} == {int, dict}:
            before["budget"], now["budget"] = dict(before["budget"]), dict(now["budget"])
            for fields in (before, now):
                if isinstance(fields["budget"][key], int):
                    fields["budget"][key] = {dataset: fields["budget"][key] for dataset in fields["datasets"]}
    return [(field, old, new) for field, old, new in _differences(before, now) if not _growth(field, old, new, before)]


def said(changed: list[Change]) -> str:
    """The changes in words, for the line that refuses them."""
    return "; ".join(f"{field}: {'absent' if old is _ABSENT else json.dumps(old)} there, "
                     f"{'absent' if new is _ABSENT else json.dumps(new)} here" for field, old, new in changed)


def as_read_now(fields: dict[str, Any]) -> dict[str, Any]:
    """A study saved by an earlier version, read as this version reads it: a field added since takes its default."""
    from pydantic import ValidationError

    from bench.study import Study

    try:
        return Study.model_validate(fields).model_dump(mode="json")
    except ValidationError:
        return fields  # a study this version no longer accepts: compared as written, so every difference is named


def check_results_dir(study: Study, results_dir: Path) -> None:
    """A results folder belongs to one study. The study may grow (more samples, seeds, datasets or losses: only the
    new trials run); any other change would alter what its finished trials mean, and is refused with every
    differing field named."""
    import yaml

    saved = results_dir / STUDY_FILE
    if not saved.exists():
        return
    changed = changes(as_read_now(yaml.safe_load(saved.read_text())), study.model_dump(mode="json"))
    if changed:
        raise BenchError(f"{results_dir} holds this study with other settings ({said(changed)}); a study with results "
                         "may only grow (more samples, seeds, datasets or losses); run the changed study with another "
                         "--results folder")
