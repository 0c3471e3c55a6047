"""The Executor interface and its registry, and following a stage's progress from the storage, whatever runs it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, ClassVar

import optuna
import pandas as pd
from tqdm import tqdm

from bench import BenchError, EnvironmentFault
from bench.plan import Plan
from bench.registry import Registry
from bench.results_folder import driver_running
from bench.storage import open_storage
from bench.study import Study
from bench.tallies import UNFINISHED, counts, finished_trials, write_results

POLL_SECONDS = 3.0  # reading every Optuna study of a large study from the journal costs CPU the workers need

# (stage, or None for every stage; whether it still runs): what `gan-bench status --wait` follows.
Following = tuple[str | None, Callable[[], bool]]


class Executor:
    """Runs the workers of a stage somewhere, each claiming the stage's trials from the study's storage until none is
    left. One subclass per kind of place, registered in EXECUTORS under the name its settings have in a study
    (`executor: {name: ...}`, a model of bench.study)."""

    detaches: ClassVar[bool] = False  # whether `run` can start a stage and return while it runs (--detach)

    def __init__(self, settings: Any, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers  # --workers, over the settings' own count

    @classmethod
    def defaults(cls, study: Study, workers: int | None) -> Any:
        """This kind's settings, at their defaults, for a study whose own executor is another kind (--executor)."""
        raise NotImplementedError

    def check(self) -> None:
        """Fails, before anything is written, if this executor cannot run from here."""

    def worker_count(self) -> int:
        """How many workers it runs, as the study (or --workers) says."""
        return self.workers or self.settings.workers

    def run(self, plan: Plan, results_dir: Path, stage: str, progress: bool = True, retry_failed: bool = False,
            detach: bool = False) -> str | None:
        """Prepares the stage's queue, runs its workers and shows progress until they are done. With `detach` (an
        executor that `detaches`), returns once they are started: how to cancel them, in a few words."""
        raise NotImplementedError

    @classmethod
    def running(cls, results_dir: Path) -> Following | None:
        """A stage it runs for the results folder with no driver to follow (started detached), if any."""
        return None

    @classmethod
    def status_lines(cls, results_dir: Path) -> list[str]:
        """What `gan-bench status` says about the runs it started for the results folder."""
        return []


def custom_executor(name: str, kind: Any) -> type[Executor]:
    """An executor of one's own, `package.module:Class`, which EXECUTORS.get imports: an Executor subclass, whose
    settings are the study's `executor` entry (its name, workers and any fields of its own)."""
    if not (isinstance(kind, type) and issubclass(kind, Executor)):
        raise BenchError(f"custom executor {name!r}: not a subclass of bench.executors.Executor")
    return kind


EXECUTORS: Registry[type[Executor]] = Registry("executor", custom_executor, "package.module:Class")


def in_progress(results_dir: Path) -> Following | None:
    """What runs the study in the results folder now: a stage an executor runs detached, or every stage while a driver
    runs; None if nothing does."""
    for _, kind in EXECUTORS.items():
        if (following := kind.running(results_dir)) is not None:
            return following
    if driver_running(results_dir):
        return None, lambda: driver_running(results_dir)
    return None


def status_lines(results_dir: Path) -> list[str]:
    """Every executor's lines for `gan-bench status`."""
    return [line for _, kind in EXECUTORS.items() for line in kind.status_lines(results_dir)]


def follow(plan: Plan, results_dir: Path, stage: str | None, running: Callable[[], bool], progress: bool) -> None:
    """Shows the progress of a stage (every stage: None) until `running()` turns false, one line per trial as it
    ends (data set, loss, sample, status, best objective, steps/s); results.csv is rewritten as trials finish."""
    study = plan.study
    storage = open_storage(study, results_dir)
    folder = results_dir.stat().st_ino
    total = sum(part.trials for part in plan.parts(stage))
    label = f"{study.name} ({stage or 'all stages'})"
    ended = finished_trials(plan, storage, stage)  # before this run: not reported again
    table = counts(plan, storage, stage)
    finished = _finished(table)
    # disable=None: no bar when the output is not a terminal (a log file would fill with redraws). Starting at what
    # earlier runs finished and advancing by update(), the bar's rate, hence its ETA, is this run's own throughput.
    bar = tqdm(total=total, initial=finished, disable=None if progress else True, desc=label, unit="trial",
               dynamic_ncols=True)
    try:
        while True:
            alive = running()
            _check_folder(results_dir, folder)
            table = counts(plan, storage, stage)
            done = _finished(table)
            if done != finished:
                write_results(plan, storage, results_dir)
                for key, line in finished_trials(plan, storage, stage).items():
                    if key not in ended and progress:
                        bar.write(f"{label}: {line}")
                    ended[key] = line
                if bar.disable and progress:  # not a terminal (a log file, a batch job): the counts too
                    print(f"{label}: {done}/{total} trials finished (completed {int(table['completed'].sum())}, "
                          f"diverged {int(table['diverged'].sum())}, failed {int(table['failed'].sum())})", flush=True)
                bar.update(done - finished)
                finished = done
            bar.set_postfix(done=int(table["completed"].sum()), running=int(table["running"].sum()),
                            diverged=int(table["diverged"].sum()), failed=int(table["failed"].sum()),
                            **({"stale": int(table["stale"].sum())} if table["stale"].sum() else {}))
            bar.refresh()
            if not alive:
                break
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()
    write_results(plan, storage, results_dir)


def _check_folder(results_dir: Path, inode: int) -> None:
    """Raises an EnvironmentFault if the results folder was removed or replaced since the run started: its trials and
    journal are gone, and workers writing on would make a new one of pieces."""
    try:
        if results_dir.stat().st_ino == inode:
            return
    except FileNotFoundError:
        pass
    raise EnvironmentFault(f"{results_dir}: the results folder was removed or replaced while the study ran")


def _finished(table: pd.DataFrame) -> int:
    """Samples that need no more work: finished, or in a skipped part."""
    return int((table["budget"] - table[list(UNFINISHED)].sum(axis=1)).sum())


def unfinished_count(plan: Plan, storage: optuna.storages.BaseStorage, stage: str) -> int:
    """How many trials of the stage are left to do or running."""
    return int(counts(plan, storage, stage)[list(UNFINISHED)].sum().sum())
