"""A worker: claims the trials of a stage from the queue one at a time, trains each, and records its metrics on the
Optuna trial as user attributes.

A trial's objective is the best FID over its evaluation steps (the paper's rule; or the study's other objective, PSNR
or SSIM of an image-to-image task, maximised), averaged over the study's seeds.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.io import environment_fault
from bench.plan import Plan, PlannedPart
from bench.queue import claim, release
from bench.results_folder import trial_dir
from bench.storage import open_storage
from bench.tallies import run_best
from bench.trial import PackMember, TrialResult, run_trials

# Set by a worker's SIGTERM handler (executors): the worker is being stopped, so an exception is not a broken trial.
stopping = threading.Event()


def work(plan: Plan, results_dir: Path, stage: str = "search", worker: str | None = None) -> int:
    """Claims and runs trials of the stage until its budget is spent, `executor.pack` at a time. Returns how many it
    ran.

    A named worker first takes back what a previous life of it left running (a requeued SLURM task)."""
    done = 0
    try:
        storage = open_storage(plan.study, results_dir)
        if worker is not None:
            release(plan, storage, stage, worker)
        while (claimed := claim(plan, storage, results_dir, stage, worker, plan.study.executor.pack)) is not None:
            part, trials = claimed
            run_claimed(plan, results_dir, part, trials)
            done += len(trials)
    except Exception as error:
        fault = environment_fault(error, where=results_dir)
        if fault is None or stopping.is_set():
            raise
        raise fault from error  # a write of the storage or the results folder failed: the worker stops
    return done


class _Claimed:
    """A claimed Optuna trial while its runs train: its configuration, seeds, listener and finished runs."""

    def __init__(self, plan: Plan, part: PlannedPart, trial: optuna.Trial):
        study = plan.study
        self.part, self.trial, self.objective = part, trial, study.objective
        if "config" in trial.user_attrs:
            self.params = trial.user_attrs["config"]
        else:
            self.params = part.hyperparameters(trial.params, trial.user_attrs.get("overrides", {}))
        self.seeds = [trial.user_attrs["seed"]] if "seed" in trial.user_attrs else study.seeds
        # Only the search stage prunes: the confirm stage re-trains one configuration with many seeds, and pruning
        # some would bias its mean ± std. The study's pruner decides, not whether trial.study has one:
        # optuna.load_study gives every study a MedianPruner unless told otherwise.
        self.pruning = study.pruner.name != "none" and part.stage == "search"
        self.runs: list[dict[str, Any]] = []
        self.pruned = self.failed = False  # either way, its other seeds are not trained
        self.started = time.time()

    def report(self, step: int, row: dict[str, Any]) -> None:
        self.trial.report(row[self.objective], step)
        # At the last step pruning would save nothing, only hide a fully trained run's FID.
        if self.pruning and step < self.part.steps and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")  # the driver stops the run with status "pruned"

    def member(self, results_dir: Path, i: int) -> PackMember:
        """Its run of the i-th seed. Optuna keeps one intermediate value per step, so a trial with several seeds
        reports (and is pruned on) its first seed's curve. A resumed run replays its earlier rows first, to what is
        then a fresh trial (prepare or release requeued it), so each step is reported once."""
        seed = self.seeds[i]
        return PackMember(self.part.config(self.params, seed), trial_dir(results_dir, self.part,
                                                                           self.trial.user_attrs["sample"], seed),
                          self.report if i == 0 else None)

    def record(self, member: PackMember, result: TrialResult) -> None:
        self.runs.append({"seed": member.config.seed, "status": result.status, "rows": result.rows,
                          "extractor": result.extractor, "protocol": result.protocol,
                          "steps_done": result.steps_done, "train_seconds": result.train_seconds,
                          "eval_seconds": result.eval_seconds, "params": member.config.resolved().hyperparameters(),
                          "threads": result.threads, "device": result.device})
        self.pruned = result.status == "pruned"

    def fail(self, error: Exception, results_dir: Path) -> Exception | None:
        """Records a broken run's trial as failed, or returns the fault that must stop the worker instead: SIGTERM
        (library clean-up code can turn the SystemExit into another exception), or the machine failing rather than
        the trial. Then the trial stays running, goes back to the queue (requeue_running, release) and resumes from
        its last checkpoint."""
        if stopping.is_set():
            return error
        fault = environment_fault(error, where=results_dir)
        if fault is not None:
            fault.__cause__ = error
            return fault
        self.failed = True
        self.trial.set_user_attr("status", "failed")
        self.trial.set_user_attr("error", "".join(traceback.format_exception_only(error)).strip()[-2000:])
        self.trial.study.tell(self.trial, state=TrialState.FAIL)
        return None


def run_claimed(plan: Plan, results_dir: Path, part: PlannedPart, trials: list[optuna.Trial]) -> None:
    """Trains the claimed samples of one part once per seed (a confirm trial: its one seed), as one pack per seed
    (bench.trial.run_trials), and records everything on each Optuna trial: each evaluation's FID as an intermediate
    value at its step, as it happens (the dashboard's curve, and what a pruner decides on), then the runs, the status
    and the objective.

    With a pruner (study `pruner`; search stage only), a trial it stops is told to Optuna as PRUNED, with status
    "pruned" and its runs so far: finished, never run again, and kept apart from the trials that trained to the end.
    A run that diverged or collapsed after a finite FID keeps its best one, as the paper's rule has it. A run that
    raises fails its trial only (a broken trial must not take the worker, or its pack, down)."""
    claimed = [_Claimed(plan, part, trial) for trial in trials]
    fault = None
    for i in range(max(len(c.seeds) for c in claimed)):
        going = [c for c in claimed if not (c.pruned or c.failed) and i < len(c.seeds)]
        if not going or fault is not None:
            break
        members = [c.member(results_dir, i) for c in going]
        try:
            results: list[TrialResult | Exception] = run_trials(members)
        except Exception as error:  # what the pack shares (its data, its scorer) failed: every member with it
            results = [error] * len(members)
        for c, member, result in zip(going, members, results):
            if isinstance(result, Exception):
                fault = c.fail(result, results_dir) or fault
            else:
                c.record(member, result)
    for c in claimed:
        if not c.failed and (c.pruned or len(c.runs) == len(c.seeds)):
            _tell(c.trial, c.runs, plan.study.objective, c.started)
    if fault is not None:
        raise fault


def _tell(trial: optuna.Trial, runs: list[dict[str, Any]], objective: str, started: float) -> None:
    """Records a trial's runs and tells Optuna how it ended."""
    # One status per trial: the first of these that one of its runs has (a pruned trial has only one run).
    status = next((s for s in ("pruned", "diverged", "collapsed") if any(r["status"] == s for r in runs)), "completed")
    trial.set_user_attr("runs", runs)
    trial.set_user_attr("status", status)
    trial.set_user_attr("wall_seconds", round(time.time() - started, 3))
    if status == "pruned":
        trial.study.tell(trial, state=TrialState.PRUNED)  # Optuna takes its last intermediate value as its value
        return
    best = [run_best(r["rows"], objective) for r in runs]
    # The paper's rule: a run that diverged or collapsed after a finite FID keeps its best one (see
    # confirm.best_configuration).
    if all(math.isfinite(b) for b in best):
        trial.study.tell(trial, sum(best) / len(best))
    else:
        trial.study.tell(trial, state=TrialState.FAIL)
