"""The queue of a study's trials, one Optuna study per part, all in one storage: the driver fills it (`prepare`),
workers take from it (`claim`), and the trials of a worker that is gone go back to it (`requeue_running`, `release`).

The driver creates every Optuna study once and enqueues its hyperparameter samples before any worker starts — several
processes creating the same RDB study at once crash. Workers then claim enqueued trials one at a time under the
results folder's claim lock, so none is run twice and the budget is never exceeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.confirm import check_confirm_source, check_search_finished, confirm_trials
from bench.journal import repair_journal
from bench.metric_registry import METRICS
from bench.plan import Plan, PlannedPart, suggest
from bench.results_folder import claiming
from bench.storage import journal_path, open_storage, take_ownership
from bench.tallies import latest_trials, stored_parts

# Trial attributes a trial queued again keeps: what it trains, not how its previous run went.
KEPT_ATTRS = ("sample", "seed", "source_trial", "source", "config", "overrides", "worker_deaths")
# How the errors of a machine that failed read in a failed trial's error: gan-bench versions before environment faults
# stopped the run recorded them as the trial's failure; the next run queues such trials again.
ENVIRONMENT_ERRORS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Input/output error",
                      "Stale file handle", "inline_container.cc", "File too large")
# A trial whose worker died this many times (killed by the kernel for memory, a crash in native code) is failed
# rather than run again: it would take down every worker that tries it.
MAX_WORKER_DEATHS = 3


def prepare(plan: Plan, results_dir: Path, stage: str = "search",
            retry_failed: bool = False) -> optuna.storages.BaseStorage:
    """Creates each Optuna study of the stage once and enqueues its trials; on a study that has results, enqueues
    only what is missing: samples added to the budget, a sample whose trial was interrupted, and finished search
    trials again when seeds were added (they replay their finished seeds from their checkpoints and train the new
    ones). Trials a dead process left running go back to the queue, and a journal whose last record a crash cut
    short is repaired. The confirm stage enqueues the best search configuration of each (dataset, loss) once per
    seed. A failed trial is queued again if it failed for its environment (a full disk, in a version that recorded that
    as a failure), or whatever its reason with `retry_failed`. Only the driver calls this, with no worker running (see
    `results_folder.driving`), and it first takes the study's name in the storage (`take_ownership`)."""
    study = plan.study
    if (journal := journal_path(study, results_dir)) is not None:
        repair_journal(journal)
    storage = open_storage(study, results_dir)
    take_ownership(study, results_dir, storage)
    if stage == "confirm":
        if study.confirm.source is None:
            check_search_finished(plan, storage)
        else:
            check_confirm_source(study)
    direction = "maximize" if METRICS.get(study.objective).higher_is_better else "minimize"
    for part in plan.parts(stage):
        ostudy = optuna.create_study(study_name=part.optuna_name, storage=storage, direction=direction,
                                     load_if_exists=True)
        if "skipped" not in ostudy.user_attrs:
            _enqueue(plan, storage, part, ostudy, retry_failed)
    # No worker runs while the driver prepares, so a RUNNING trial belongs to a process that died.
    requeue_running(plan, storage, stage)
    return storage


def _enqueue(plan: Plan, storage: optuna.storages.BaseStorage, part: PlannedPart, ostudy: optuna.Study,
             retry_failed: bool) -> None:
    """Enqueues what one part is missing (see `prepare`)."""
    trials = ostudy.get_trials(deepcopy=False)
    current = latest_trials(trials)
    for trial in current.values():
        if trial.user_attrs.get("status") == "failed" and (retry_failed or failed_for_environment(trial)):
            attrs = {k: v for k, v in _kept_attrs(trial).items() if k != "worker_deaths"}
            ostudy.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
    if part.stage == "confirm" and trials:
        return  # its configuration is chosen once: a search trial finishing later must not change it
    planned = _planned_trials(plan, storage, part)
    if part.stage == "confirm" and not planned:  # no search trial of the pair has a finite score: nothing to confirm
        ostudy.set_user_attr("skipped", f"no search trial with a finite {plan.study.objective.upper()}")
    for params, attrs in planned:
        trial = current.get(attrs["sample"])
        if trial is None or trial.user_attrs.get("status") == "interrupted":  # a copy was never enqueued
            ostudy.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    for trial in current.values():
        seeds = {run["seed"] for run in trial.user_attrs.get("runs", [])}
        if trial.user_attrs.get("status") in ("completed", "diverged", "collapsed") and seeds != set(plan.study.seeds):
            ostudy.enqueue_trial(trial.params, user_attrs=_kept_attrs(trial), skip_if_exists=False)


def _planned_trials(plan: Plan, storage: optuna.storages.BaseStorage,
                    part: PlannedPart) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(params, user attributes) of every trial to enqueue for one part."""
    if part.stage == "search":
        return [(params, {"sample": i, **({"overrides": overrides} if overrides else {})})
                for i, (params, overrides) in enumerate(part.planned_samples())]
    return [({}, attrs) for attrs in confirm_trials(plan, storage, part)]


def failed_for_environment(trial: FrozenTrial) -> bool:
    error = trial.user_attrs.get("error", "")
    return any(marker in error for marker in ENVIRONMENT_ERRORS)


def _kept_attrs(trial: FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in trial.user_attrs.items() if k in KEPT_ATTRS}


def _requeue(storage: optuna.storages.BaseStorage, ostudy: optuna.Study, trial: FrozenTrial, **attrs: Any) -> None:
    """Marks an interrupted trial failed and enqueues it again; run again, it resumes from its checkpoints."""
    storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    ostudy.enqueue_trial(trial.params, user_attrs={**_kept_attrs(trial), **attrs}, skip_if_exists=False)


def requeue_running(plan: Plan, storage: optuna.storages.BaseStorage, stage: str) -> int:
    """Puts every trial of the stage left RUNNING back in the queue (its worker is gone); returns how many."""
    requeued = 0
    for _, ostudy, trials in stored_parts(plan, storage, stage):
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                _requeue(storage, ostudy, trial)
                requeued += 1
    return requeued


def release(plan: Plan, storage: optuna.storages.BaseStorage, stage: str, worker: str, died: str | None = None) -> int:
    """Re-enqueues the trials a worker of this name left running: a requeued SLURM task (same array job and task
    id) that was killed mid-trial, or (`died`: how) a local worker that died. Returns how many."""
    released = 0
    for _, ostudy, trials in stored_parts(plan, storage, stage):
        for trial in trials:
            if trial.state != TrialState.RUNNING or trial.user_attrs.get("worker") != worker:
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


def _samples_taken(trials: list[FrozenTrial]) -> set[int]:
    return {t.user_attrs["sample"] for t in trials if "sample" in t.user_attrs}


def claim(plan: Plan, storage: optuna.storages.BaseStorage, results_dir: Path, stage: str = "search",
          worker: str | None = None, count: int = 1) -> tuple[PlannedPart, list[optuna.Trial]] | None:
    """Up to `count` trials of the stage to run, all of one part (a pack: bench.trial.run_trials), or None when its
    budget is spent. Parts are served round-robin by how many trials each has claimed, so partial results cover every
    (dataset, loss)."""
    with claiming(results_dir):
        candidates = []
        for part in plan.parts(stage):
            ostudy = optuna.load_study(study_name=part.optuna_name, storage=storage, sampler=part.sampler(),
                                       pruner=plan.study.pruner.make_pruner(part.steps))
            trials = ostudy.get_trials(deepcopy=False)
            if _claimable(part, stage, trials):
                taken = _samples_taken([t for t in trials if t.state != TrialState.WAITING])
                candidates.append((len(taken), part, ostudy))
        if not candidates:
            return None
        _, part, ostudy = min(candidates, key=lambda c: c[0])
        claimed = []
        while len(claimed) < count and _claimable(part, stage, trials := ostudy.get_trials(deepcopy=False)):
            waiting = any(t.state == TrialState.WAITING for t in trials)
            trial = ostudy.ask()
            if not waiting:  # a fresh TPE proposal
                trial.set_user_attr("sample", len(_samples_taken(trials)))
            if "config" not in trial.user_attrs:  # a confirm trial's configuration is its source run's, whole
                # A default sample's overrides (values outside the space) are not searched parameters of the trial.
                overrides = trial.user_attrs.get("overrides", {})
                suggest(trial, {n: d for n, d in part.space.items() if n not in overrides})
            if worker is not None:
                trial.set_user_attr("worker", worker)
            claimed.append(trial)
        return part, claimed


def _claimable(part: PlannedPart, stage: str, trials: list[FrozenTrial]) -> bool:
    """Whether a part has a trial to claim: one enqueued, or (TPE, search stage) a sample still to propose."""
    adaptive = part.sampler_name == "tpe" and stage == "search"
    return (any(t.state == TrialState.WAITING for t in trials)
            or (adaptive and len(_samples_taken(trials)) < part.trials))
