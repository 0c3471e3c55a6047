"""What a study's storage says about its trials: where each sample stands (`counts`), which failed and why, the
finished ones in words, the results table (results.csv), and the disk space the unfinished ones need."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from bench import workers
from bench.io import atomic_write_text
from bench.metric_registry import best_of
from bench.metrics import protocol_id
from bench.plan import Plan, PlannedPart
from bench.results_folder import RESULTS_FILE, trial_dir
from bench.storage import study_names
from bench.study import STAGES
from bench.trial import disk_bytes

# What each sample of a stage is now, one of these: the statuses of a finished trial, then those of one that is not.
FINISHED = ("completed", "diverged", "collapsed", "pruned", "failed")
UNFINISHED = ("running", "stale", "queued")


def stored_parts(plan: Plan, storage: optuna.storages.BaseStorage, stage: str | None = None,
                 missing: bool = False) -> Iterator[tuple[PlannedPart, optuna.Study | None, list[FrozenTrial]]]:
    """Each part of the stage (every stage: None) with its Optuna study and that study's trials; a part whose Optuna
    study was not created yet (its stage not prepared) is left out, or with `missing` comes as (part, None, [])."""
    existing = study_names(storage)
    for part in plan.parts(stage):
        if part.optuna_name in existing:
            ostudy = optuna.load_study(study_name=part.optuna_name, storage=storage)
            yield part, ostudy, ostudy.get_trials(deepcopy=False)
        elif missing:
            yield part, None, []


def latest_trials(trials: list[FrozenTrial], finished_only: bool = False) -> dict[int, FrozenTrial]:
    """Per sample, the trial that stands for it: its latest. A sample has several when a trial was interrupted and
    queued again, or finished and queued again to train seeds added to the study; the latest supersedes the
    others. With `finished_only`, the latest that finished: its results stand until the one queued after it ends."""
    out = {}
    for trial in sorted(trials, key=lambda t: t.number):
        if "sample" in trial.user_attrs and (not finished_only or trial.user_attrs.get("status") in FINISHED):
            out[trial.user_attrs["sample"]] = trial
    return out


def run_best(rows: list[dict[str, Any]], objective: str) -> float:
    """A run's best value of the objective over its evaluations (the paper's rule for FID), the worst possible
    (±inf) if it has none that is finite."""
    return best_of(objective, [row.get(objective, math.nan) for row in rows])


def _where(part: PlannedPart, sample: int) -> str:
    stage = "" if part.stage == "search" else f" ({part.stage})"
    return f"{part.dataset} {part.loss}{stage} sample {sample}"


def failures(plan: Plan, storage: optuna.storages.BaseStorage, stage: str | None = None) -> list[str]:
    """One line per sample whose trial failed: where, and the error it failed with."""
    lines = []
    for part, _, trials in stored_parts(plan, storage, stage):
        for sample, trial in sorted(latest_trials(trials).items()):
            if trial.user_attrs.get("status") == "failed":
                error = " ".join(trial.user_attrs.get("error", "no error recorded").split())
                lines.append(f"{_where(part, sample)}: {error[-300:]}")
    return lines


def finished_trials(plan: Plan, storage: optuna.storages.BaseStorage,
                    stage: str | None) -> dict[tuple[str, str, str, int, int], str]:
    """The trial that stands for each finished sample, by (stage, dataset, loss, sample, trial number), described in
    one line: its status, its best objective (FID, PSNR or SSIM) and its training speed (steps per second over its
    runs)."""
    out, objective = {}, plan.study.objective
    for part, _, trials in stored_parts(plan, storage, stage):
        for sample, trial in latest_trials(trials, finished_only=True).items():
            status, runs = trial.user_attrs["status"], trial.user_attrs.get("runs", [])
            best = best_of(objective, [run_best(run["rows"], objective) for run in runs])
            seconds = sum(run.get("train_seconds", 0.0) for run in runs)
            speed = f", {sum(run['steps_done'] for run in runs) / seconds:.1f} steps/s" if seconds else ""
            out[(part.stage, part.dataset, part.loss, sample, trial.number)] = (
                f"{_where(part, sample)}: {status}"
                + (f", best {objective.upper()} {best:.4g}" if math.isfinite(best) else f", no {objective.upper()}")
                + speed)
    return out


def counts(plan: Plan, storage: optuna.storages.BaseStorage, stage: str | None = None) -> pd.DataFrame:
    """Per stage and (dataset, loss), where each of its `budget` samples stands, by the trial that stands for it
    (`latest_trials`): finished as completed / diverged / collapsed / pruned / failed, or running (its worker
    alive, or not known to be dead), stale (running, but its worker is gone: the next `gan-bench run` queues it
    again), or queued (waiting, or not drawn yet). The columns sum to `budget`, except for a skipped confirm stage
    (its search has no finite FID). Also the best objective so far (best_fid, best_ssim, ...), of trials trained to
    the end."""
    parts, running, objective = [], [], plan.study.objective
    for part, ostudy, trials in stored_parts(plan, storage, stage, missing=True):
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
        row[f"best_{objective}"] = best_of(objective, values) if values else float("nan")
        row["skipped"] = skipped
        rows.append(row)
    return pd.DataFrame(rows)


def unfinished(plan: Plan, storage: optuna.storages.BaseStorage, stage: str) -> pd.DataFrame:
    """The rows of `counts` whose (dataset, loss) still has trials to do or running; a stage not prepared yet has
    every trial to do."""
    table = counts(plan, storage, stage)
    return table[table[list(UNFINISHED)].sum(axis=1) > 0]


def results_table(plan: Plan, storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per (trial, seed, evaluation step) of every finished sample of every stage (its latest finished
    trial: a sample queued again keeps its rows until the new trial ends); a diverged run without
    any evaluation still gets one row, with no metrics, so that it is counted, and so does a trial that failed (no
    seed, no step: it has no runs). `status` is the run's own: completed, diverged, collapsed or pruned (a pruned
    trial's rows stay apart from those of runs trained to the end), or failed. `threads` and `device` are those the
    run trained with, as it recorded them (empty for a run of a version that did not). `searched` names the stage's
    searched hyperparameters, space-separated: the report tells them from the values a study fixes."""
    rows = []
    for part, _, trials in stored_parts(plan, storage):
        for trial in latest_trials(trials, finished_only=True).values():
            if trial.user_attrs.get("status") == "failed" and not trial.user_attrs.get("runs"):
                rows.append({"stage": part.stage, "dataset": part.dataset, "loss": part.loss,
                             "trial": trial.user_attrs["sample"], "status": "failed", "searched": " ".join(part.space),
                             **{f"param_{k}": v for k, v in trial.params.items()}})
            for run in trial.user_attrs.get("runs", []):
                protocol = run.get("protocol") or {"extractor": run["extractor"]}
                base = {"stage": part.stage, "dataset": part.dataset, "loss": part.loss,
                        "trial": trial.user_attrs["sample"], "seed": run["seed"], "status": run["status"],
                        "protocol": protocol_id(protocol), **protocol,
                        "wall_seconds": trial.user_attrs.get("wall_seconds"),
                        "source_trial": trial.user_attrs.get("source_trial"),
                        # The run's files (samples.png, result.json, ...), relative to the results folder.
                        "folder": trial_dir(Path(), part, trial.user_attrs["sample"], run["seed"]).as_posix(),
                        "threads": run.get("threads"), "device": run.get("device"), "searched": " ".join(part.space),
                        **{f"param_{k}": v for k, v in run["params"].items()}}
                for row in run["rows"] or [{"step": run["steps_done"]}]:
                    rows.append({**base, **row})
    columns = ["stage", "dataset", "loss", "trial", "seed", "step", "status", "fid", "kid"]
    table = pd.DataFrame(rows)
    for column in columns:
        if column not in table:
            table[column] = pd.Series(dtype=float)
    # A failed trial's row has no seed and no step: nullable integers keep the others' written as they were (0, not 0.0).
    table = table.astype({"seed": "Int64", "step": "Int64"})
    rest = [c for c in table.columns if c not in columns]
    order = {stage: i for i, stage in enumerate(STAGES)}
    return table[columns + rest].sort_values(["stage", "dataset", "loss", "trial", "seed", "step"], kind="stable",
                                             key=lambda c: c.map(order) if c.name == "stage" else c)


def write_results(plan: Plan, storage: optuna.storages.BaseStorage, results_dir: Path) -> pd.DataFrame:
    """Writes results.csv from the storage (whole, in place of the last one) and returns it."""
    table = results_table(plan, storage)
    atomic_write_text(results_dir / RESULTS_FILE, table.to_csv(index=False))
    return table


# What each evaluation adds to results.csv (a row) and to the storage (the trial's attributes and intermediate value).
ROW_BYTES = 4_000


def space_needed(plan: Plan, storage: optuna.storages.BaseStorage, stages: list[str],
                 workers: int) -> tuple[int, int]:
    """(bytes, trials): about how much the results folder needs to finish the stages' unfinished trials — each trial's
    folder as it ends (`trial.disk_bytes`: checkpoint, samples, JSON files) once per seed, a checkpoint's new copy per
    trial a worker trains at once (`executor.pack`) while it is written, and the results table and journal rows — and how many trials that is."""
    sizes: dict[tuple[str, str], tuple[int, int]] = {}  # (folder bytes, evaluations) per (dataset, loss)
    needed, trials, largest = 0, 0, 0
    for stage in stages:
        for _, row in counts(plan, storage, stage).iterrows():
            left = int(row[list(UNFINISHED)].sum())
            if not left:
                continue
            key = (row["dataset"], row["loss"])
            if key not in sizes:  # the loss's default sample: sizes differ little between samples
                part = plan.part(stage, *key)
                params, overrides = part.default
                config = part.config(part.hyperparameters(params, overrides), 0)
                sizes[key] = disk_bytes(config), len(config.resolved().eval_steps)
            folder, evaluations = sizes[key]
            needed += left * (len(plan.study.seeds) if stage == "search" else 1) * (folder + ROW_BYTES * evaluations)
            trials += left
            largest = max(largest, folder)
    return needed + workers * plan.study.executor.pack * largest, trials
