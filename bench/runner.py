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
from bench.trial import run_trial

# Set by a worker's SIGTERM handler (executors): the worker is being stopped, so an exception is not a broken trial.
stopping = threading.Event()


def work(plan: Plan, results_dir: Path, stage: str = "search", worker: str | None = None) -> int:
    """Claims and runs trials of the stage until its budget is spent. Returns how many it ran.

    A named worker first takes back what a previous life of it left running (a requeued SLURM task)."""
    done = 0
    try:
        storage = open_storage(plan.study, results_dir)
        if worker is not None:
            release(plan, storage, stage, worker)
        while (claimed := claim(plan, storage, results_dir, stage, worker)) is not None:
            run_claimed(plan, results_dir, *claimed)
            done += 1
    except Exception as error:
        fault = environment_fault(error, where=results_dir)
        if fault is None or stopping.is_set():
            raise
        raise fault from error  # a write of the storage or the results folder failed: the worker stops
    return done


def run_claimed(plan: Plan, results_dir: Path, part: PlannedPart, trial: optuna.Trial) -> None:
    """Trains the claimed sample once per seed (a confirm trial: its one seed) and records everything on the
    Optuna trial: each evaluation's FID as an intermediate value at its step, as it happens (the dashboard's curve,
    and what a pruner decides on), then the runs, the status and the objective.

    With a pruner (study `pruner`; search stage only), a trial it stops is told to Optuna as PRUNED, with status
    "pruned" and its runs so far: finished, never run again, and kept apart from the trials that trained to the end.
    A run that diverged or collapsed after a finite FID keeps its best one, as the paper's rule has it."""
    study = plan.study
    sample = trial.user_attrs["sample"]
    if "config" in trial.user_attrs:
        params = trial.user_attrs["config"]
    else:
        params = part.hyperparameters(trial.params, trial.user_attrs.get("overrides", {}))
    seeds = [trial.user_attrs["seed"]] if "seed" in trial.user_attrs else study.seeds
    # Only the search stage prunes: the confirm stage re-trains one configuration with many seeds, and pruning some
    # would bias its mean ± std. The study's pruner decides, not whether trial.study has one: optuna.load_study
    # gives every study a MedianPruner unless told otherwise.
    pruning = study.pruner.name != "none" and part.stage == "search"

    def report(step: int, row: dict[str, Any]) -> None:
        trial.report(row[study.objective], step)
        # At the last step pruning would save nothing, only hide a fully trained run's FID.
        if pruning and step < part.steps and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")  # run_trial stops and returns status "pruned"

    runs = []
    started = time.time()
    try:
        for i, seed in enumerate(seeds):
            config = part.config(params, seed)
            out = trial_dir(results_dir, part, sample, seed)
            # Optuna keeps one intermediate value per step, so a trial with several seeds reports (and is pruned on)
            # its first seed's curve. A resumed run replays its earlier rows first, to what is then a fresh trial
            # (prepare or release requeued it), so each step is reported once.
            result = run_trial(config, out, on_evaluation=report if i == 0 else None)
            runs.append({"seed": seed, "status": result.status, "rows": result.rows, "extractor": result.extractor,
                         "protocol": result.protocol,
                         "steps_done": result.steps_done, "train_seconds": result.train_seconds,
                         "eval_seconds": result.eval_seconds, "params": config.resolved().hyperparameters(),
                         "threads": result.threads, "device": result.device})
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
    _tell(trial, runs, study.objective, started)


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
