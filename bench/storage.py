"""A study's Optuna storage: opening it (a database that outlives a server restart, or a journal file), naming the
Optuna studies in it, and who owns a study's name there.

Every Optuna study of a gan-bench study is named `<name>/...`, and many studies may share one storage (a lab's
PostgreSQL server). So that two studies of one name never mix their trials, the storage records who owns the name: an
Optuna study named `<name>` (no trials) whose user attributes hold the owner's definition (the study as it was last
run), its results folder, host, and the id of that folder (the file `.study-id` in it, which moves with the folder).
Only that results folder may run or read the name's trials; another study, or the same study from another results
folder, is refused (a second results folder has its own driver and claim locks, and would take the first one's
running trials for dead ones).
"""

from __future__ import annotations

import functools
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import optuna

from bench import BenchError
from bench.io import atomic_write_text, lost_connection
from bench.journal import open_journal
from bench.results_folder import FOLDER_ID, JOURNAL, STUDY_FILE, as_read_now, changes, said
from bench.study import JOURNAL_URL, Study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_name(study_name: str, stage: str, dataset: str, loss: str) -> str:
    """The name of the Optuna study that holds one stage of a (dataset, loss)."""
    base = f"{study_name}/{dataset}/{loss}"
    return base if stage == "search" else f"{base}/{stage}"


# How long a database may be unreachable (a server restarting, a fail-over) before the run stops on it.
RECONNECT_SECONDS = 120.0


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage that outlives a database restart: connections are checked before use (pool_pre_ping: a
    restarted server leaves every pooled connection dead), and a call that fails on a lost connection is made again
    until the server answers, for up to RECONNECT_SECONDS; then the error goes up (an EnvironmentFault: the run stops
    cleanly). A transaction cut by the restart is rolled back by the server, so its call is made again whole."""

    def __init__(self, url: str) -> None:
        self.down_since: float | None = None  # when the database stopped answering, while it does not
        super().__init__(url, engine_kwargs={"pool_pre_ping": True})


def _reconnecting(method: Any) -> Any:
    @functools.wraps(method)
    def call(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as error:
                if not lost_connection(error):
                    raise
                # One outage, one window: a call made after an earlier one gave up (the clean-up of a run that stops
                # on it) fails at once rather than waiting the window again.
                self.down_since = self.down_since or time.monotonic()
                if time.monotonic() - self.down_since > RECONNECT_SECONDS:
                    raise
                time.sleep(1.0)
            else:
                self.down_since = None
                return result

    return call


# Every call of the storage's interface (and `_get_trials`, which Optuna's cache calls), each one session of its own;
# not the helpers that run inside another call's session.
for _name, _method in vars(optuna.storages.RDBStorage).items():
    if callable(_method) and (not _name.startswith("_") or _name == "_get_trials"):
        setattr(ReconnectingRDBStorage, _name, _reconnecting(_method))


_DATABASES: dict[str, optuna.storages.BaseStorage] = {}


def journal_path(study: Study, results_dir: Path) -> Path | None:
    """The journal file of the study's storage: the results folder's by default, or the one `journal:///PATH` names;
    None for a database."""
    if study.storage is None:
        return results_dir / JOURNAL
    if study.storage.startswith(JOURNAL_URL):
        return Path(study.storage[len(JOURNAL_URL):])
    return None


def open_storage(study: Study, results_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage: a database URL, a journal file (by default the results folder's: fine for one host)."""
    journal = journal_path(study, results_dir)
    if journal is not None:
        return open_journal(journal)
    # One per URL and process: each RDBStorage holds a connection pool, which Optuna never closes.
    if study.storage not in _DATABASES:
        _DATABASES[study.storage] = optuna.storages.get_storage(ReconnectingRDBStorage(study.storage))
    return _DATABASES[study.storage]


def study_names(storage: optuna.storages.BaseStorage) -> set[str]:
    """The names of every Optuna study in the storage."""
    return {s.study_name for s in storage.get_all_studies()}


# ---------------------------------------------------------------------------------------------------------------------
# Who owns a study name in a storage (see the module's docstring)

OWNER = "gan_bench_owner"


def folder_id(results_dir: Path, create: bool = False) -> str | None:
    """The results folder's id (made with `create` if it has none)."""
    path = results_dir / FOLDER_ID
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if not create:
            return None
    atomic_write_text(path, uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def storage_label(study: Study, results_dir: Path) -> str:
    """The storage in words: the journal file, or the URL without its password."""
    if (journal := journal_path(study, results_dir)) is not None:
        return str(journal)
    from sqlalchemy.engine import make_url

    try:
        return make_url(study.storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads (another storage kind): shown as it is
        return study.storage


def _owner(study: Study, storage: optuna.storages.BaseStorage) -> dict[str, Any] | None:
    """The owner record of the study's name in the storage, None if there is none."""
    for summary in storage.get_all_studies():
        if summary.study_name == study.name:
            return summary.user_attrs.get(OWNER) or {}
    return None


def ownership_problem(study: Study, results_dir: Path, storage: optuna.storages.BaseStorage) -> str | None:
    """Why this results folder may not run or read the study's name in the storage, in one line; None if it may."""
    where, name = storage_label(study, results_dir), study.name
    record = _owner(study, storage)
    fix = "give this study another `name`, or use another storage"
    if not record:
        earlier = [n for n in study_names(storage) if n.startswith(f"{name}/")]
        if earlier and not (results_dir / STUDY_FILE).is_file():
            return (f"{where}: the study name {name!r} holds the trials of a study run before gan-bench recorded who "
                    f"owns a name, from another results folder than {results_dir}; {fix}, or run it from its own "
                    "results folder")
        return None
    mine = folder_id(results_dir)
    same_folder = (record.get("folder_id") == mine if mine else
                   record.get("results") == str(results_dir.resolve()) and record.get("host") == socket.gethostname())
    changed = changes(as_read_now(record.get("definition", {})), study.model_dump(mode="json"))
    other = f"{record.get('results', 'an unknown results folder')} on {record.get('host', 'an unknown host')}"
    if not same_folder and changed:
        return (f"{where}: the study name {name!r} is taken by another study, run from {other} (it differs in "
                f"{said(changed)}); {fix}")
    if not same_folder:
        return (f"{where}: this study {name!r} already runs from {other}; a study runs from one results folder (its "
                "driver and claim locks are there): run it from that folder, with more --workers if need be, or "
                "give this one another `name` or storage")
    if changed:
        return (f"{where}: the study {name!r} of this results folder was run with other settings ({said(changed)}); "
                "a study with results may only grow (more samples, seeds, datasets or losses); give the changed "
                f"study another `name`, or use another storage")
    return None


def check_ownership(study: Study, results_dir: Path, storage: optuna.storages.BaseStorage | None = None) -> None:
    """Raises the one-line BenchError of `ownership_problem`, if any. Without `storage`, opens the study's, unless it
    is the results folder's journal and that does not exist yet (nothing to check)."""
    if storage is None:
        journal = journal_path(study, results_dir)
        if journal is not None and not journal.is_file():
            return  # no journal, no trials: nothing to check
        storage = open_storage(study, results_dir)
    problem = ownership_problem(study, results_dir, storage)
    if problem:
        raise BenchError(problem)


def take_ownership(study: Study, results_dir: Path, storage: optuna.storages.BaseStorage) -> None:
    """Records this results folder as the owner of the study's name in the storage (or checks that it is), with the
    study's definition as it runs now (a grown study replaces the smaller one). Called by the driver before it
    enqueues anything; two drivers racing for a free name: the storage lets one create the record."""
    check_ownership(study, results_dir, storage)
    record = {"definition": study.model_dump(mode="json"), "results": str(results_dir.resolve()),
              "host": socket.gethostname(), "folder_id": folder_id(results_dir, create=True)}
    try:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study.name)
    except optuna.exceptions.DuplicatedStudyError:
        study_id = storage.get_study_id_from_name(study.name)
        deadline = time.monotonic() + 10
        while not _owner(study, storage) and time.monotonic() < deadline:  # its creator is writing the record now
            time.sleep(0.2)
        check_ownership(study, results_dir, storage)
    storage.set_study_user_attr(study_id, OWNER, record)
