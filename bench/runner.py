"""Running a study through Optuna: one Optuna study per (dataset, loss), all in one storage.

The driver (`prepare`) creates every Optuna study once and enqueues its hyperparameter samples before
any worker starts — several processes creating the same RDB study at once crash. Workers (`work`)
then claim enqueued trials one at a time under a file lock, so none is run twice and the budget is
never exceeded, and record each trial's metrics on it as user attributes. The trial's objective is
the best FID over its evaluation steps (the paper's rule; or the study's other objective, PSNR or SSIM of an
image-to-image task, maximised), averaged over the study's seeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pydantic import ValidationError

from bench import BenchError, workers
from bench.io import atomic_write_bytes, atomic_write_text, environment_fault, lost_connection, open_lock_file
from bench.metrics import HIGHER_IS_BETTER, best_of, protocol_id
from bench.study import JOURNAL_URL, STAGES, Distribution, Part, Study
from bench.config import FALLBACK_DEFAULTS, TrialConfig, folder_name
from bench.trial import disk_bytes, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)



def optuna_name(study: Study, part: Part) -> str:
    base = f"{study.name}/{part.dataset}/{part.loss}"
    return base if part.stage == "search" else f"{base}/{part.stage}"


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
    if journal is None:
        # One per URL and process: each RDBStorage holds a connection pool, which Optuna never closes.
        if study.storage not in _DATABASES:
            _DATABASES[study.storage] = optuna.storages.get_storage(ReconnectingRDBStorage(study.storage))
        return _DATABASES[study.storage]
    damage = journal_damage(journal)
    if damage is not None and not damage[2]:  # a torn last record does not stop readers; `prepare` cuts it off
        raise BenchError(damaged_journal(journal, damage[0]))
    backend = JournalBackend(str(journal), lock_obj=JournalFlock(journal.with_name(journal.name + ".flock")))
    return optuna.storages.JournalStorage(backend)


def distributions(study: Study, loss: str) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, param in study.space(loss).items():
        if not isinstance(param, Distribution):
            continue
        if param.dist == "choice":
            out[name] = CategoricalDistribution(param.values)
        elif param.dist == "int":
            out[name] = IntDistribution(int(param.low), int(param.high))
        else:
            out[name] = FloatDistribution(param.low, param.high, log=param.dist == "loguniform")
    return out


def _sampler(study: Study, dataset: str, loss: str) -> optuna.samplers.BaseSampler:
    # A seed per (dataset, loss) that does not change when other datasets or losses are added; a variant draws its
    # loss's samples, so the two compare pair by pair.
    key = study.base_loss(loss) if loss in study.variants else loss
    seed = (study.sampler.seed * 1_000_003 + zlib.crc32(f"{dataset}/{key}".encode())) % 2**31
    if study.sampler.name == "grid":
        grid = {name: d.choices for name, d in distributions(study, loss).items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if study.sampler.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def default_sample(study: Study, loss: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The loss's default configuration (the authors', as compare_gan v1's params.py lists it, with the study's
    `loss_defaults` on top) as (Optuna params, overrides).

    v1 always trains the default as its first sample, even where it lies outside the searched range (the narrow
    range fixes beta1 = 0.5 and n_disc = 1, yet GAN's default has beta1 = 0 and WGAN's n_disc = 5: params.py lines
    77-88, 111-113, 146-148). Values inside a searched distribution are Optuna params like any sample's; the others
    (outside the range, or different from a fixed value) are overrides, stored on the trial and applied as they
    are: the default sample is a fixed point, neither clamped nor dropped."""
    spec = study.loss_spec(loss)
    space, own = distributions(study, loss), study.default_overrides(loss)
    variant = study.variants[loss].params if loss in study.variants else {}
    params, overrides = {}, {}
    for name in [*study.space(loss), *(n for n in own if n not in study.space(loss))]:
        if name in variant:
            continue  # a variant's fixed parameters hold for every sample, its default too
        value = own.get(name, spec.defaults.get(name, FALLBACK_DEFAULTS.get(name)))
        if value is None:
            continue  # no default: the sampler draws it
        distribution = space.get(name)
        if distribution is None:
            if study.fixed_params(loss).get(name) != value:
                overrides[name] = value
        elif isinstance(distribution, CategoricalDistribution):
            (params if value in distribution.choices else overrides)[name] = value
        elif distribution.low <= value <= distribution.high:
            params[name] = value
        else:
            overrides[name] = value
    return params, overrides


def planned_samples(study: Study, dataset: str, loss: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The hyperparameter samples of one (dataset, loss) as (Optuna params, overrides), in order: the default first
    (if asked), then the sampler's proposals. Drawn up front from a seeded sampler, so they are the same on every run
    and with any number of workers. TPE proposes from finished trials, so only its default sample is planned."""
    samples = [default_sample(study, loss)] if study.defaults else []
    if study.sampler.name == "tpe":
        return samples
    space = distributions(study, loss)

    def propose(trial: optuna.Trial) -> float:
        _suggest(trial, space)
        return 0.0

    # optimize(), not ask/tell: the grid sampler stops the study when the grid is exhausted.
    scratch = optuna.create_study(sampler=_sampler(study, dataset, loss))
    scratch.optimize(propose, n_trials=max(0, study.budget.samples - len(samples)))
    return samples + [(trial.params, {}) for trial in scratch.trials]


def _suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> None:
    """Asks the trial for every parameter of `space` (an enqueued trial answers with its own values)."""
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(name, d.low, d.high)
        else:
            trial.suggest_float(name, d.low, d.high, log=d.log)


def best_configuration(study: Study, storage: optuna.storages.BaseStorage, dataset: str,
                       loss: str) -> tuple[int, dict[str, Any]] | None:
    """(sample, resolved hyperparameters) of the search trial with the best objective (FID: the lowest; PSNR, SSIM:
    the highest) over all its evaluations, or None if no trial has a finite one. Ties: the earlier sample.

    As compare_gan v1 chose phase 3's configuration (generate_tasks_lib.py lines 152-163): over every checkpoint of
    every run, where a NaN checkpoint scored 31337 (eval_gan_lib.py line 43) and the run was kept, so a run that
    diverged late competes with its best earlier FID. With several seeds a trial scores the mean of their bests;
    a seed without any finite FID makes the trial ineligible."""
    ostudy = optuna.load_study(study_name=optuna_name(study, Part("search", dataset, loss, 0)), storage=storage)
    candidates = []
    for trial in latest_trials(ostudy.get_trials(deepcopy=False), finished_only=True).values():
        runs = trial.user_attrs.get("runs")
        if not runs or trial.user_attrs.get("status") == "pruned":  # failed, or trained less
            continue
        bests = [run_best(run["rows"], study.objective) for run in runs]
        if all(math.isfinite(b) for b in bests):
            candidates.append((sum(bests) / len(bests), trial.user_attrs["sample"], runs[0]["params"]))
    if not candidates:
        return None
    sign = -1 if study.objective in HIGHER_IS_BETTER else 1
    _, sample, params = min(candidates, key=lambda c: (sign * c[0], c[1]))
    return sample, params


def run_best(rows: list[dict[str, Any]], objective: str) -> float:
    """A run's best value of the objective over its evaluations (the paper's rule for FID), the worst possible
    (±inf) if it has none that is finite."""
    return best_of(objective, [row.get(objective, math.nan) for row in rows])


def direction(study: Study) -> str:
    """The Optuna direction of the study's objective."""
    return "maximize" if study.objective in HIGHER_IS_BETTER else "minimize"


def confirm_source(study: Study) -> tuple[Study, Path | None]:
    """The study and results folder whose search stage the confirm stage starts from: this one, or
    `confirm.source`, checked to hold every (dataset, loss) of this study trained the same way."""
    from bench.study import StudyError, load_study

    source_dir = study.confirm.source
    if source_dir is None:
        return study, None
    saved = Path(source_dir) / "study.yaml"
    if not saved.is_file():
        raise BenchError(f"confirm.source: {source_dir} is not a results folder (no study.yaml); run that study's "
                         "search first")
    try:
        source = load_study(saved)
    except StudyError as error:
        raise BenchError(f"confirm.source: {error}") from None
    for field in TRIAL_DEFINING:
        ours, theirs = _field(study, field), _field(source, field)
        if ours != theirs:
            raise BenchError(f"confirm.source: {source_dir} trains differently: {field} is {theirs!r} there, "
                             f"{ours!r} here")
    missing = [f"{d}/{l}" for d, l in study.pairs() if (d, l) not in source.pairs()]
    if missing:
        raise BenchError(f"confirm.source: {source_dir} has no search for {', '.join(missing)}")
    return source, Path(source_dir)


def check_confirm_source(study: Study) -> None:
    """Raises a one-line BenchError unless `confirm.source` is a results folder of a study trained the same way whose
    search stage is finished."""
    source, source_dir = confirm_source(study)
    storage = open_storage(source, source_dir)
    check_ownership(source, source_dir, storage)  # its search's trials, not those of another study of its name
    _check_search_finished(source, storage, str(source_dir))


# Study fields that decide what a trial trains and how it is scored: a confirm stage may take its configurations
# only from a search that agrees on all of them.
TRIAL_DEFINING = ("tasks", "model", "model_per_dataset", "image_size", "batch_size", "z_dim", "z_dist", "init", "threads",
                  "dataset_options", "budget.steps", "budget.count", "budget.eval_every", "budget.evaluations",
                  "metrics", "perceptual_net")


def _field(study: Study, dotted: str) -> Any:
    value: Any = study
    for name in dotted.split("."):
        value = getattr(value, name)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def unfinished(study: Study, storage: optuna.storages.BaseStorage, stage: str) -> pd.DataFrame:
    """The rows of `counts` whose (dataset, loss) still has trials to do or running; a stage not prepared yet has
    every trial to do."""
    table = counts(study, storage, stage)
    return table[table[list(UNFINISHED)].sum(axis=1) > 0]


def _check_search_finished(study: Study, storage: optuna.storages.BaseStorage, where: str = "") -> None:
    unfinished_searches = unfinished(study, storage, "search")
    if len(unfinished_searches):
        row = unfinished_searches.iloc[0]
        fix = (f"finish that study first (gan-bench run on {where})" if where else
               "run the search stage first (gan-bench run STUDY.yaml --stage search)")
        raise BenchError(f"the confirm stage starts from the search's results{' in ' + where if where else ''}, but "
                         f"{len(unfinished_searches)} (dataset, loss) searches are unfinished (e.g. "
                         f"{row['dataset']}/{row['loss']}: {row[list(UNFINISHED)].sum()} trials not finished); {fix}")


def _planned_trials(study: Study, storage: optuna.storages.BaseStorage,
                    part: Part) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(params, user attributes) of every trial to enqueue for one part."""
    if part.stage == "search":
        return [(params, {"sample": i, **({"overrides": overrides} if overrides else {})})
                for i, (params, overrides) in enumerate(planned_samples(study, part.dataset, part.loss))]
    source, source_dir = confirm_source(study)
    source_storage = storage if source_dir is None else open_storage(source, source_dir)
    best = best_configuration(source, source_storage, part.dataset, part.loss)
    if best is None:
        return []
    sample, config = best
    # The source run's resolved hyperparameters, whole: the confirm trial trains exactly that configuration.
    return [({}, {"sample": i, "seed": seed, "source_trial": sample, "config": config,
                  **({"source": str(source_dir)} if source_dir else {})})
            for i, seed in enumerate(study.confirm.seeds())]


def prepare(study: Study, results_dir: Path, stage: str = "search",
            retry_failed: bool = False) -> optuna.storages.BaseStorage:
    """Creates each Optuna study of the stage once and enqueues its trials; on a study that has results, enqueues
    only what is missing: samples added to the budget, a sample whose trial was interrupted, and finished search
    trials again when seeds were added (they replay their finished seeds from their checkpoints and train the new
    ones). Trials a dead process left running go back to the queue, and a journal whose last record a crash cut
    short is repaired. The confirm stage enqueues the best search configuration of each (dataset, loss) once per
    seed. A failed trial is queued again if it failed for its environment (a full disk, in a version that recorded that
    as a failure), or whatever its reason with `retry_failed`. Only the driver calls this, with no worker running (see
    `executors.driving`), and it first takes the study's name in the storage (`take_ownership`)."""
    if (journal := journal_path(study, results_dir)) is not None:
        repair_journal(journal)
    storage = open_storage(study, results_dir)
    take_ownership(study, results_dir, storage)
    if stage == "confirm":
        if study.confirm.source is None:
            _check_search_finished(study, storage)
        else:
            check_confirm_source(study)
    for part in study.plan(stage):
        ostudy = optuna.create_study(study_name=optuna_name(study, part), storage=storage, direction=direction(study),
                                     load_if_exists=True)
        if "skipped" in ostudy.user_attrs:
            continue
        trials = ostudy.get_trials(deepcopy=False)
        current = latest_trials(trials)
        for trial in current.values():
            if trial.user_attrs.get("status") == "failed" and (retry_failed or failed_for_environment(trial)):
                attrs = {k: v for k, v in _kept_attrs(trial).items() if k != "worker_deaths"}
                ostudy.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
        if part.stage == "confirm" and trials:
            continue  # its configuration is chosen once: a search trial finishing later must not change it
        planned = _planned_trials(study, storage, part)
        if part.stage == "confirm" and not planned:  # no search trial of the pair has a finite score: nothing to confirm
            ostudy.set_user_attr("skipped", f"no search trial with a finite {study.objective.upper()}")
        for params, attrs in planned:
            trial = current.get(attrs["sample"])
            if trial is None or trial.user_attrs.get("status") == "interrupted":  # a copy was never enqueued
                ostudy.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        for trial in current.values():
            seeds = {run["seed"] for run in trial.user_attrs.get("runs", [])}
            if trial.user_attrs.get("status") in ("completed", "diverged", "collapsed") and seeds != set(study.seeds):
                ostudy.enqueue_trial(trial.params, user_attrs=_kept_attrs(trial), skip_if_exists=False)
    # No worker runs while the driver prepares, so a RUNNING trial belongs to a process that died.
    requeue_running(study, storage, stage)
    return storage


# How the errors of a machine that failed read in a failed trial's error: gan-bench versions before environment faults
# stopped the run recorded them as the trial's failure; the next run queues such trials again.
ENVIRONMENT_ERRORS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Input/output error",
                      "Stale file handle", "inline_container.cc", "File too large")


def failed_for_environment(trial: optuna.trial.FrozenTrial) -> bool:
    error = trial.user_attrs.get("error", "")
    return any(marker in error for marker in ENVIRONMENT_ERRORS)


def failures(study: Study, storage: optuna.storages.BaseStorage, stage: str | None = None) -> list[str]:
    """One line per sample whose trial failed: where, and the error it failed with."""
    lines, existing = [], _existing(storage)
    for part in study.plan(stage):
        if optuna_name(study, part) not in existing:
            continue
        trials = optuna.load_study(study_name=optuna_name(study, part), storage=storage).get_trials(deepcopy=False)
        for sample, trial in sorted(latest_trials(trials).items()):
            if trial.user_attrs.get("status") == "failed":
                stage_name = "" if part.stage == "search" else f" ({part.stage})"
                error = " ".join(trial.user_attrs.get("error", "no error recorded").split())
                lines.append(f"{part.dataset} {part.loss}{stage_name} sample {sample}: {error[-300:]}")
    return lines


def latest_trials(trials: list[optuna.trial.FrozenTrial],
                  finished_only: bool = False) -> dict[int, optuna.trial.FrozenTrial]:
    """Per sample, the trial that stands for it: its latest. A sample has several when a trial was interrupted and
    queued again, or finished and queued again to train seeds added to the study; the latest supersedes the
    others. With `finished_only`, the latest that finished: its results stand until the one queued after it ends."""
    out = {}
    for trial in sorted(trials, key=lambda t: t.number):
        if "sample" in trial.user_attrs and (not finished_only or trial.user_attrs.get("status") in FINISHED):
            out[trial.user_attrs["sample"]] = trial
    return out


JOURNAL = "optuna.journal"


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
    return (f"{path}: record {line} is damaged and later records follow it; keep a copy of the file, then keep the "
            f"records before it (head -n {line - 1} {path} > {path}.kept && mv {path}.kept {path}) or run the "
            "study into another --results folder")


def requeue_running(study: Study, storage: optuna.storages.BaseStorage, stage: str) -> int:
    """Puts every trial of the stage left RUNNING back in the queue (its worker is gone); returns how many."""
    requeued, existing = 0, _existing(storage)
    for part in study.plan(stage):
        if optuna_name(study, part) not in existing:
            continue
        ostudy = optuna.load_study(study_name=optuna_name(study, part), storage=storage)
        for trial in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _requeue(storage, ostudy, trial)
            requeued += 1
    return requeued


# Trial attributes a trial queued again keeps: what it trains, not how its previous run went.
KEPT_ATTRS = ("sample", "seed", "source_trial", "source", "config", "overrides", "worker_deaths")


def _kept_attrs(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in trial.user_attrs.items() if k in KEPT_ATTRS}


def _requeue(storage: optuna.storages.BaseStorage, ostudy: optuna.Study, trial: optuna.trial.FrozenTrial,
             **attrs: Any) -> None:
    """Marks an interrupted trial failed and enqueues it again; run again, it resumes from its checkpoints."""
    storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    ostudy.enqueue_trial(trial.params, user_attrs={**_kept_attrs(trial), **attrs}, skip_if_exists=False)


# A trial whose worker died this many times (killed by the kernel for memory, a crash in native code) is failed
# rather than run again: it would take down every worker that tries it.
MAX_WORKER_DEATHS = 3


def release(study: Study, storage: optuna.storages.BaseStorage, stage: str, worker: str,
            died: str | None = None) -> int:
    """Re-enqueues the trials a worker of this name left running: a requeued SLURM task (same array job and task
    id) that was killed mid-trial, or (`died`: how) a local worker that died. Returns how many."""
    released = 0
    for part in study.plan(stage):
        ostudy = optuna.load_study(study_name=optuna_name(study, part), storage=storage)
        for trial in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") != worker:
                continue
            released += 1
            if died is None:
                _requeue(storage, ostudy, trial)
                continue
            deaths = trial.user_attrs.get("worker_deaths", 0) + 1
            if deaths < MAX_WORKER_DEATHS:
                _requeue(storage, ostudy, trial, worker_deaths=deaths)
            else:
                storage.set_trial_user_attr(trial._trial_id, "status", "failed")
                storage.set_trial_user_attr(trial._trial_id, "error", f"its worker died {deaths} times ({died})")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return released


@contextlib.contextmanager
def _claim_lock(results_dir: Path) -> Iterator[None]:
    with open_lock_file(results_dir / ".claim.lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _samples_taken(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {t.user_attrs["sample"] for t in trials if "sample" in t.user_attrs}


def claim(study: Study, storage: optuna.storages.BaseStorage, results_dir: Path, stage: str = "search",
          worker: str | None = None) -> tuple[Part, optuna.Trial] | None:
    """The next trial of the stage to run, or None when its budget is spent. Studies are served round-robin by
    how many trials each has claimed, so partial results cover every (dataset, loss)."""
    with _claim_lock(results_dir):
        candidates = []
        for part in study.plan(stage):
            ostudy = optuna.load_study(study_name=optuna_name(study, part), storage=storage,
                                       sampler=_sampler(study, part.dataset, part.loss),
                                       pruner=study.pruner.make_pruner(study.budget.steps_for(part.dataset)))
            trials = ostudy.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            taken = _samples_taken([t for t in trials if t.state != TrialState.WAITING])
            adaptive = study.sampler.name == "tpe" and stage == "search"
            if waiting or (adaptive and len(_samples_taken(trials)) < part.trials):
                candidates.append((len(taken), part, ostudy, waiting, len(_samples_taken(trials))))
        if not candidates:
            return None
        _, part, ostudy, waiting, next_sample = min(candidates, key=lambda c: c[0])
        trial = ostudy.ask()
        if not waiting:  # a fresh TPE proposal
            trial.set_user_attr("sample", next_sample)
        if "config" not in trial.user_attrs:  # a confirm trial's configuration is its source run's, whole
            # A default sample's overrides (values outside the space) are not searched parameters of the trial.
            overrides = trial.user_attrs.get("overrides", {})
            _suggest(trial, {n: d for n, d in distributions(study, part.loss).items() if n not in overrides})
        if worker is not None:
            trial.set_user_attr("worker", worker)
        return part, trial


def trial_dir(results_dir: Path, part: Part, sample: int, seed: int) -> Path:
    loss = folder_name(part.loss)
    if part.stage == "search":
        return results_dir / "trials" / f"{part.dataset}-{loss}-{sample:04d}-seed{seed}"
    return results_dir / "trials" / part.stage / f"{part.dataset}-{loss}-seed{seed}"


def run_claimed(study: Study, results_dir: Path, part: Part, trial: optuna.Trial) -> None:
    """Trains the claimed sample once per seed (a confirm trial: its one seed) and records everything on the
    Optuna trial: each evaluation's FID as an intermediate value at its step, as it happens (the dashboard's curve,
    and what a pruner decides on), then the runs, the status and the objective.

    With a pruner (study `pruner`; search stage only), a trial it stops is told to Optuna as PRUNED, with status
    "pruned" and its runs so far: finished, never run again, and kept apart from the trials that trained to the end.
    A run that diverged or collapsed after a finite FID keeps its best one, as the paper's rule has it."""
    dataset, loss = part.dataset, part.loss
    sample = trial.user_attrs["sample"]
    if "config" in trial.user_attrs:
        params = trial.user_attrs["config"]
    else:
        params = {**study.fixed_params(loss), **trial.user_attrs.get("overrides", {}), **trial.params}
    seeds = [trial.user_attrs["seed"]] if "seed" in trial.user_attrs else study.seeds
    # Only the search stage prunes: the confirm stage re-trains one configuration with many seeds, and pruning some
    # would bias its mean ± std. The study's pruner decides, not whether trial.study has one: optuna.load_study
    # gives every study a MedianPruner unless told otherwise.
    pruning = study.pruner.name != "none" and part.stage == "search"
    steps = study.budget.steps_for(dataset)

    def report(step: int, row: dict[str, Any]) -> None:
        trial.report(row[study.objective], step)
        # At the last step pruning would save nothing, only hide a fully trained run's FID.
        if pruning and step < steps and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")  # run_trial stops and returns status "pruned"

    runs = []
    started = time.time()
    try:
        for i, seed in enumerate(seeds):
            config = TrialConfig.from_params(study.trial_fields(dataset, loss), params, seed)
            out = trial_dir(results_dir, part, sample, seed)
            # Optuna keeps one intermediate value per step, so a trial with several seeds reports (and is pruned on)
            # its first seed's curve. A resumed run replays its earlier rows first, to what is then a fresh trial
            # (prepare or release requeued it), so each step is reported once.
            result = run_trial(config, out, on_evaluation=report if i == 0 else None)
            runs.append({"seed": seed, "status": result.status, "rows": result.rows, "extractor": result.extractor,
                         "protocol": result.protocol,
                         "steps_done": result.steps_done, "train_seconds": result.train_seconds,
                         "eval_seconds": result.eval_seconds, "params": config.resolved().hyperparameters()})
            if result.status == "pruned":
                break  # the trial is stopped: its other seeds are not trained
    except Exception as error:  # a broken trial must not take the worker (and the rest of the study) down
        if stopping.is_set():
            # Stopped mid-trial (SIGTERM): library clean-up code can turn the SystemExit into another exception.
            # The trial is not broken: it stays running and goes back to the queue (requeue_running, release).
            raise
        fault = environment_fault(error, where=results_dir)
        if fault is not None:
            # The machine failed, not the trial: the worker stops, and the trial stays running for the driver (or the
            # next run) to queue again; it resumes from its last checkpoint.
            raise fault from error
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", "".join(traceback.format_exception_only(error)).strip()[-2000:])
        trial.study.tell(trial, state=TrialState.FAIL)
        return
    # One status per trial: the first of these that one of its runs has (a pruned trial has only one run).
    status = next((s for s in ("pruned", "diverged", "collapsed") if any(r["status"] == s for r in runs)), "completed")
    trial.set_user_attr("runs", runs)
    trial.set_user_attr("status", status)
    trial.set_user_attr("wall_seconds", round(time.time() - started, 3))
    if status == "pruned":
        trial.study.tell(trial, state=TrialState.PRUNED)  # Optuna takes its last intermediate value as its value
        return
    best = [run_best(r["rows"], study.objective) for r in runs]
    # The paper's rule: a run that diverged or collapsed after a finite FID keeps its best one (see
    # best_configuration).
    if all(math.isfinite(b) for b in best):
        trial.study.tell(trial, sum(best) / len(best))
    else:
        trial.study.tell(trial, state=TrialState.FAIL)


# Set by a worker's SIGTERM handler (executors): the worker is being stopped, so an exception is not a broken trial.
stopping = threading.Event()


def work(study: Study, results_dir: Path, stage: str = "search", worker: str | None = None) -> int:
    """A worker: claims and runs trials of the stage until its budget is spent. Returns how many it ran.

    A named worker first takes back what a previous life of it left running (a requeued SLURM task)."""
    done = 0
    try:
        storage = open_storage(study, results_dir)
        if worker is not None:
            release(study, storage, stage, worker)
        while (claimed := claim(study, storage, results_dir, stage, worker)) is not None:
            run_claimed(study, results_dir, *claimed)
            done += 1
    except Exception as error:
        fault = environment_fault(error, where=results_dir)
        if fault is None or stopping.is_set():
            raise
        raise fault from error  # a write of the storage or the results folder failed: the worker stops
    return done


def _existing(storage: optuna.storages.BaseStorage) -> set[str]:
    return {s.study_name for s in storage.get_all_studies()}


def finished_trials(study: Study, storage: optuna.storages.BaseStorage,
                    stage: str | None) -> dict[tuple[str, str, str, int, int], str]:
    """The trial that stands for each finished sample, by (stage, dataset, loss, sample, trial number), described in
    one line: its status, its best objective (FID, PSNR or SSIM) and its training speed (steps per second over its runs)."""
    out, existing = {}, _existing(storage)
    for part in study.plan(stage):
        if optuna_name(study, part) not in existing:
            continue
        trials = optuna.load_study(study_name=optuna_name(study, part), storage=storage).get_trials(deepcopy=False)
        for sample, trial in latest_trials(trials, finished_only=True).items():
            status, runs = trial.user_attrs["status"], trial.user_attrs.get("runs", [])
            best = best_of(study.objective, [run_best(run["rows"], study.objective) for run in runs])
            seconds = sum(run.get("train_seconds", 0.0) for run in runs)
            speed = f", {sum(run['steps_done'] for run in runs) / seconds:.1f} steps/s" if seconds else ""
            stage_name = "" if part.stage == "search" else f" ({part.stage})"
            out[(part.stage, part.dataset, part.loss, sample, trial.number)] = (
                f"{part.dataset} {part.loss}{stage_name} sample {sample}: {status}"
                + (f", best {study.objective.upper()} {best:.4g}" if math.isfinite(best)
                   else f", no {study.objective.upper()}") + speed)
    return out


# What each sample of a stage is now, one of these: the statuses of a finished trial, then those of one that is not.
FINISHED = ("completed", "diverged", "collapsed", "pruned", "failed")
UNFINISHED = ("running", "stale", "queued")


def counts(study: Study, storage: optuna.storages.BaseStorage, stage: str | None = None) -> pd.DataFrame:
    """Per stage and (dataset, loss), where each of its `budget` samples stands, by the trial that stands for it
    (`latest_trials`): finished as completed / diverged / collapsed / pruned / failed, or running (its worker
    alive, or not known to be dead), stale (running, but its worker is gone: the next `gan-bench run` queues it
    again), or queued (waiting, or not drawn yet). The columns sum to `budget`, except for a skipped confirm stage
    (its search has no finite FID). Also the best objective so far (best_fid, best_ssim, ...), of trials trained to
    the end."""
    parts, running, existing = [], [], _existing(storage)
    for part in study.plan(stage):
        name = optuna_name(study, part)
        ostudy = optuna.load_study(study_name=name, storage=storage) if name in existing else None
        trials = ostudy.get_trials(deepcopy=False) if ostudy else []
        current = latest_trials(trials)
        skipped = ostudy.user_attrs.get("skipped", "") if ostudy else ""
        parts.append((part, trials, current, skipped))
        running += [t for t in current.values() if t.state == TrialState.RUNNING]
    gone = workers.dead({t.user_attrs["worker"] for t in running if "worker" in t.user_attrs})
    rows = []
    for part, trials, current, skipped in parts:
        status = [t.user_attrs.get("status") for t in current.values()]
        row = {"stage": part.stage, "dataset": part.dataset, "loss": part.loss, "budget": part.trials}
        row.update({s: status.count(s) for s in FINISHED})
        alive = [t.user_attrs.get("worker") not in gone for t in current.values() if t.state == TrialState.RUNNING]
        row["running"], row["stale"] = sum(alive), alive.count(False)
        row["queued"] = 0 if skipped else part.trials - sum(row[s] for s in (*FINISHED, "running", "stale"))
        # COMPLETE only: a pruned trial's value (its last score, of a shorter training) is not a best one.
        values = [t.value for t in latest_trials(trials, finished_only=True).values() if t.state == TrialState.COMPLETE]
        row[f"best_{study.objective}"] = best_of(study.objective, values) if values else float("nan")
        row["skipped"] = skipped
        rows.append(row)
    return pd.DataFrame(rows)


# What each evaluation adds to results.csv (a row) and to the storage (the trial's attributes and intermediate value).
ROW_BYTES = 4_000


def space_needed(study: Study, storage: optuna.storages.BaseStorage, stages: list[str], workers: int) -> tuple[int, int]:
    """(bytes, trials): about how much the results folder needs to finish the stages' unfinished trials — each trial's
    folder as it ends (`trial.disk_bytes`: checkpoint, samples, JSON files) once per seed, a checkpoint's new copy per
    worker while it is written, and the results table and journal rows — and how many trials that is."""
    sizes: dict[tuple[str, str], tuple[int, int]] = {}  # (folder bytes, evaluations) per (dataset, loss)
    needed, trials, largest = 0, 0, 0
    for stage in stages:
        for _, row in counts(study, storage, stage).iterrows():
            left = int(row[list(UNFINISHED)].sum())
            if not left:
                continue
            key = (row["dataset"], row["loss"])
            if key not in sizes:  # the loss's default sample: sizes differ little between samples
                params, overrides = default_sample(study, row["loss"])
                config = TrialConfig.from_params(study.trial_fields(*key),
                                                 {**study.fixed_params(row["loss"]), **overrides, **params}, 0)
                sizes[key] = disk_bytes(config), len(config.resolved().eval_steps)
            folder, evaluations = sizes[key]
            needed += left * (len(study.seeds) if stage == "search" else 1) * (folder + ROW_BYTES * evaluations)
            trials += left
            largest = max(largest, folder)
    return needed + workers * largest, trials


def results_table(study: Study, storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per (trial, seed, evaluation step) of every finished sample of every stage (its latest finished
    trial: a sample queued again keeps its rows until the new trial ends); a diverged run without
    any evaluation still gets one row, with no metrics, so that it is counted. `status` is the run's own: completed,
    diverged, collapsed or pruned (a pruned trial's rows stay apart from those of runs trained to the end)."""
    rows, existing = [], _existing(storage)
    for part in study.plan():
        if optuna_name(study, part) not in existing:
            continue
        trials = optuna.load_study(study_name=optuna_name(study, part), storage=storage).get_trials(deepcopy=False)
        for trial in latest_trials(trials, finished_only=True).values():
            for run in trial.user_attrs.get("runs", []):
                protocol = run.get("protocol") or {"extractor": run["extractor"]}
                base = {"stage": part.stage, "dataset": part.dataset, "loss": part.loss,
                        "trial": trial.user_attrs["sample"], "seed": run["seed"], "status": run["status"],
                        "protocol": protocol_id(protocol), **protocol,
                        "wall_seconds": trial.user_attrs.get("wall_seconds"),
                        "source_trial": trial.user_attrs.get("source_trial"),
                        # The run's files (samples.png, result.json, ...), relative to the results folder.
                        "folder": trial_dir(Path(), part, trial.user_attrs["sample"], run["seed"]).as_posix(),
                        **{f"param_{k}": v for k, v in run["params"].items()}}
                for row in run["rows"] or [{"step": run["steps_done"]}]:
                    rows.append({**base, **row})
    columns = ["stage", "dataset", "loss", "trial", "seed", "step", "status", "fid", "kid"]
    table = pd.DataFrame(rows)
    for column in columns:
        if column not in table:
            table[column] = pd.Series(dtype=float)
    rest = [c for c in table.columns if c not in columns]
    order = {stage: i for i, stage in enumerate(STAGES)}
    return table[columns + rest].sort_values(["stage", "dataset", "loss", "trial", "seed", "step"], kind="stable",
                                             key=lambda c: c.map(order) if c.name == "stage" else c)


def write_results(study: Study, storage: optuna.storages.BaseStorage, results_dir: Path) -> pd.DataFrame:
    table = results_table(study, storage)
    atomic_write_text(results_dir / "results.csv", table.to_csv(index=False))
    return table


# What a study with results may change: where it runs, and a confirm stage added later.
FREE_FIELDS = ("executor", "data_root", "stages")
# Fields keyed by dataset or by loss: an entry for a dataset or loss added to the study is growth.
PER_DATASET = ("tasks", "losses_per_dataset", "dataset_options", "model_per_dataset", "budget.steps",
               "budget.eval_every", "budget.evaluations")
PER_LOSS = ("loss_search_space", "loss_defaults", "variants")
_ABSENT = object()


def _differences(old: Any, new: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) of every field that differs, dict entries one by one."""
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


def _changes(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The fields in which study `now` differs from `before` (both as model_dump(mode="json")) other than by growing:
    (dotted field, old value, new value)."""
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


def _said(changed: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{field}: {'absent' if old is _ABSENT else json.dumps(old)} there, "
                     f"{'absent' if new is _ABSENT else json.dumps(new)} here" for field, old, new in changed)


def _as_read_now(fields: dict[str, Any]) -> dict[str, Any]:
    """A study saved by an earlier version, read as this version reads it: a field added since takes its default."""
    try:
        return Study.model_validate(fields).model_dump(mode="json")
    except ValidationError:
        return fields  # a study this version no longer accepts: compared as written, so every difference is named


def check_results_dir(study: Study, results_dir: Path) -> None:
    """A results folder belongs to one study. The study may grow (more samples, seeds, datasets or losses: only the
    new trials run); any other change would alter what its finished trials mean, and is refused with every
    differing field named."""
    import yaml

    saved = results_dir / "study.yaml"
    if not saved.exists():
        return
    changed = _changes(_as_read_now(yaml.safe_load(saved.read_text())), study.model_dump(mode="json"))
    if changed:
        raise BenchError(f"{results_dir} holds this study with other settings ({_said(changed)}); a study with results "
                         "may only grow (more samples, seeds, datasets or losses); run the changed study with another "
                         "--results folder")


# ---------------------------------------------------------------------------------------------------------------------
# Who owns a study name in a storage
#
# Every Optuna study of a gan-bench study is named `<name>/...`, and many studies may share one storage (a lab's
# PostgreSQL server). So that two studies of one name never mix their trials, the storage records who owns the name: an
# Optuna study named `<name>` (no trials) whose user attributes hold the owner's definition (the study as it was last
# run), its results folder, host, and the id of that folder (the file `.study-id` in it, which moves with the folder).
# Only that results folder may run or read the name's trials; another study, or the same study from another results
# folder, is refused (a second results folder has its own driver and claim locks, and would take the first one's
# running trials for dead ones).

OWNER = "gan_bench_owner"
FOLDER_ID = ".study-id"


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
        earlier = [n for n in _existing(storage) if n.startswith(f"{name}/")]
        if earlier and not (results_dir / "study.yaml").is_file():
            return (f"{where}: the study name {name!r} holds the trials of a study run before gan-bench recorded who "
                    f"owns a name, from another results folder than {results_dir}; {fix}, or run it from its own "
                    "results folder")
        return None
    mine = folder_id(results_dir)
    same_folder = (record.get("folder_id") == mine if mine else
                   record.get("results") == str(results_dir.resolve()) and record.get("host") == socket.gethostname())
    changed = _changes(_as_read_now(record.get("definition", {})), study.model_dump(mode="json"))
    other = f"{record.get('results', 'an unknown results folder')} on {record.get('host', 'an unknown host')}"
    if not same_folder and changed:
        return (f"{where}: the study name {name!r} is taken by another study, run from {other} (it differs in "
                f"{_said(changed)}); {fix}")
    if not same_folder:
        return (f"{where}: this study {name!r} already runs from {other}; a study runs from one results folder (its "
                "driver and claim locks are there): run it from that folder, with more --workers if need be, or "
                "give this one another `name` or storage")
    if changed:
        return (f"{where}: the study {name!r} of this results folder was run with other settings ({_said(changed)}); "
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
