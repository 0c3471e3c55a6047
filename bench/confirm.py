"""The confirm stage's source: the finished search it starts from (this study's, or `confirm.source`, another study
trained the same way), the best configuration of each (dataset, loss) there, and the trials that re-train it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from bench import BenchError
from bench.metric_registry import METRICS
from bench.plan import Plan, PlannedPart
from bench.results_folder import STUDY_FILE, read_study
from bench.storage import check_ownership, open_storage
from bench.study import Study
from bench.tallies import UNFINISHED, latest_trials, run_best, unfinished

# Study fields that decide what a trial trains and how it is scored: a confirm stage may take its configurations
# only from a search that agrees on all of them.
TRIAL_DEFINING = ("tasks", "model", "model_per_dataset", "image_size", "batch_size", "z_dim", "z_dist", "init",
                  "threads", "dataset_options", "budget.steps", "budget.count", "budget.eval_every",
                  "budget.evaluations", "metrics", "perceptual_net")


def best_configuration(plan: Plan, storage: optuna.storages.BaseStorage, dataset: str,
                       loss: str) -> tuple[int, dict[str, Any]] | None:
    """(sample, resolved hyperparameters) of the search trial with the best objective (FID: the lowest; PSNR, SSIM:
    the highest) over all its evaluations, or None if no trial has a finite one. Ties: the earlier sample.

    As compare_gan v1 chose phase 3's configuration (generate_tasks_lib.py lines 152-163): over every checkpoint of
    every run, where a NaN checkpoint scored 31337 (eval_gan_lib.py line 43) and the run was kept, so a run that
    diverged late competes with its best earlier FID. With several seeds a trial scores the mean of their bests;
    a seed without any finite FID makes the trial ineligible."""
    objective = plan.study.objective
    ostudy = optuna.load_study(study_name=plan.part("search", dataset, loss).optuna_name, storage=storage)
    candidates = []
    for trial in latest_trials(ostudy.get_trials(deepcopy=False), finished_only=True).values():
        runs = trial.user_attrs.get("runs")
        if not runs or trial.user_attrs.get("status") == "pruned":  # failed, or trained less
            continue
        bests = [run_best(run["rows"], objective) for run in runs]
        if all(math.isfinite(b) for b in bests):
            candidates.append((sum(bests) / len(bests), trial.user_attrs["sample"], runs[0]["params"]))
    if not candidates:
        return None
    sign = -1 if METRICS.get(objective).higher_is_better else 1
    _, sample, params = min(candidates, key=lambda c: (sign * c[0], c[1]))
    return sample, params


def confirm_source(study: Study) -> tuple[Study, Path | None]:
    """The study and results folder whose search stage the confirm stage starts from: this one, or
    `confirm.source`, checked to hold every (dataset, loss) of this study trained the same way."""
    from bench.study import StudyError

    source_dir = study.confirm.source
    if source_dir is None:
        return study, None
    saved = Path(source_dir) / STUDY_FILE
    if not saved.is_file():
        raise BenchError(f"confirm.source: {source_dir} is not a results folder (no study.yaml); run that study's "
                         "search first")
    try:
        source = read_study(Path(source_dir))
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
    check_search_finished(Plan(source), storage, str(source_dir))


def _field(study: Study, dotted: str) -> Any:
    value: Any = study
    for name in dotted.split("."):
        value = getattr(value, name)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def check_search_finished(plan: Plan, storage: optuna.storages.BaseStorage, where: str = "") -> None:
    """Raises a one-line BenchError if a search of the study (in results folder `where`, if another's) has trials
    left to do or running: a confirm stage would choose from part of them."""
    unfinished_searches = unfinished(plan, storage, "search")
    if len(unfinished_searches):
        row = unfinished_searches.iloc[0]
        fix = (f"finish that study first (gan-bench run on {where})" if where else
               "run the search stage first (gan-bench run STUDY.yaml --stage search)")
        raise BenchError(f"the confirm stage starts from the search's results{' in ' + where if where else ''}, but "
                         f"{len(unfinished_searches)} (dataset, loss) searches are unfinished (e.g. "
                         f"{row['dataset']}/{row['loss']}: {row[list(UNFINISHED)].sum()} trials not finished); {fix}")


def confirm_trials(plan: Plan, storage: optuna.storages.BaseStorage, part: PlannedPart) -> list[dict[str, Any]]:
    """The user attributes of each trial of a confirm part: the best search configuration of its (dataset, loss),
    once per confirm seed; none if no search trial has a finite objective."""
    source, source_dir = confirm_source(plan.study)
    source_plan, source_storage = (plan, storage) if source_dir is None else (Plan(source),
                                                                              open_storage(source, source_dir))
    best = best_configuration(source_plan, source_storage, part.dataset, part.loss)
    if best is None:
        return []
    sample, config = best
    # The source run's resolved hyperparameters, whole: the confirm trial trains exactly that configuration.
    return [{"sample": i, "seed": seed, "source_trial": sample, "config": config,
             **({"source": str(source_dir)} if source_dir else {})}
            for i, seed in enumerate(plan.study.confirm.seeds())]
