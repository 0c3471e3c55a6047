"""Running a study through Optuna: one Optuna study per (dataset, loss), all in one storage.

The driver (`prepare`) creates every Optuna study once and enqueues its hyperparameter samples before
any worker starts — several processes creating the same RDB study at once crash. Workers (`work`)
then claim enqueued trials one at a time under a file lock, so none is run twice and the budget is
never exceeded, and record each trial's metrics on it as user attributes. The trial's objective is
the best FID over its evaluation steps (the paper's rule), averaged over the study's seeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import time
import traceback
import zlib
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bench import BenchError, losses
from bench.io import atomic_write_text
from bench.metrics import protocol_id
from bench.study import STAGES, Distribution, Part, Study
from bench.trial import FALLBACK_DEFAULTS, TrialConfig, folder_name, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)



def optuna_name(study: Study, part: Part) -> str:
    base = f"{study.name}/{part.dataset}/{part.loss}"
    return base if part.stage == "search" else f"{base}/{part.stage}"


def open_storage(study: Study, results_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage URL, or by default a journal file in the results folder (fine for one host)."""
    if study.storage:
        return optuna.storages.get_storage(study.storage)
    backend = optuna.storages.journal.JournalFileBackend(str(results_dir / "optuna.journal"))
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
    seed = (study.sampler.seed * 1_000_003 + zlib.crc32(f"{dataset}/{study.base_loss(loss)}".encode())) % 2**31
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
    spec = losses.get(study.base_loss(loss))
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
    """(sample, resolved hyperparameters) of the search trial with the lowest best FID over all its evaluations,
    or None if no trial has a finite FID. Ties: the earlier sample.

    As compare_gan v1 chose phase 3's configuration (generate_tasks_lib.py lines 152-163): over every checkpoint of
    every run, where a NaN checkpoint scored 31337 (eval_gan_lib.py line 43) and the run was kept, so a run that
    diverged late competes with its best earlier FID. With several seeds a trial scores the mean of their bests;
    a seed without any finite FID makes the trial ineligible."""
    ostudy = optuna.load_study(study_name=optuna_name(study, Part("search", dataset, loss, 0)), storage=storage)
    candidates = []
    for trial in ostudy.get_trials(deepcopy=False):
        runs = trial.user_attrs.get("runs")
        if not runs or trial.user_attrs.get("status") == "pruned":  # failed, interrupted, not run, or trained less
            continue
        bests = [run_best_fid(run["rows"]) for run in runs]
        if all(math.isfinite(b) for b in bests):
            candidates.append((sum(bests) / len(bests), trial.user_attrs["sample"], runs[0]["params"]))
    if not candidates:
        return None
    _, sample, params = min(candidates, key=lambda c: (c[0], c[1]))
    return sample, params


def run_best_fid(rows: list[dict[str, Any]]) -> float:
    """A run's best FID over its evaluations (the paper's rule), inf if it has none that is finite."""
    return min((row["fid"] for row in rows if math.isfinite(row.get("fid", math.nan))), default=math.inf)


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
    missing = [f"{d}/{l}" for d in study.datasets for l in study.losses
               if d not in source.datasets or l not in source.losses]
    if missing:
        raise BenchError(f"confirm.source: {source_dir} has no search for {', '.join(missing)}")
    return source, Path(source_dir)


def check_confirm_source(study: Study) -> None:
    """Raises a one-line BenchError unless `confirm.source` is a results folder of a study trained the same way whose
    search stage is finished."""
    source, source_dir = confirm_source(study)
    _check_search_finished(source, open_storage(source, source_dir), str(source_dir))


# Study fields that decide what a trial trains and how it is scored: a confirm stage may take its configurations
# only from a search that agrees on all of them.
TRIAL_DEFINING = ("model", "model_per_dataset", "image_size", "batch_size", "z_dim", "z_dist", "init", "threads",
                  "dataset_options", "budget.steps", "budget.count", "budget.eval_every", "budget.evaluations",
                  "metrics")


def _field(study: Study, dotted: str) -> Any:
    value: Any = study
    for name in dotted.split("."):
        value = getattr(value, name)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def unfinished(study: Study, storage: optuna.storages.BaseStorage, stage: str) -> pd.DataFrame:
    """The rows of `counts` whose (dataset, loss) still has trials to do or running; a stage not prepared yet has
    every trial to do."""
    table = counts(study, storage, stage)
    return table[(table["to_do"] > 0) | (table["running"] > 0)]


def _check_search_finished(study: Study, storage: optuna.storages.BaseStorage, where: str = "") -> None:
    unfinished_searches = unfinished(study, storage, "search")
    if len(unfinished_searches):
        row = unfinished_searches.iloc[0]
        fix = (f"finish that study first (gan-bench run on {where})" if where else
               "run the search stage first (gan-bench run STUDY.yaml --stage search)")
        raise BenchError(f"the confirm stage starts from the search's results{' in ' + where if where else ''}, but "
                         f"{len(unfinished_searches)} (dataset, loss) searches are unfinished (e.g. "
                         f"{row['dataset']}/{row['loss']}: {row['to_do']} trials to do); {fix}")


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


def prepare(study: Study, results_dir: Path, stage: str = "search") -> optuna.storages.BaseStorage:
    """Creates each Optuna study of the stage once, enqueues its trials, and re-enqueues trials a dead process left
    running. The confirm stage enqueues the best search configuration of each (dataset, loss) once per seed."""
    storage = open_storage(study, results_dir)
    if stage == "confirm":
        if study.confirm.source is None:
            _check_search_finished(study, storage)
        else:
            check_confirm_source(study)
    for part in study.plan(stage):
        ostudy = optuna.create_study(study_name=optuna_name(study, part), storage=storage, direction="minimize",
                                     load_if_exists=True)
        trials = ostudy.get_trials(deepcopy=False)
        if not trials and "skipped" not in ostudy.user_attrs:
            planned = _planned_trials(study, storage, part)
            if not planned:  # no search trial of this pair has a finite FID: there is nothing to confirm
                ostudy.set_user_attr("skipped", "no search trial with a finite FID")
            for params, attrs in planned:
                ostudy.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    # No worker runs while the driver prepares, so a RUNNING trial belongs to a process that died.
    requeue_running(study, storage, stage)
    return storage


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


def _requeue(storage: optuna.storages.BaseStorage, ostudy: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Marks an interrupted trial failed and enqueues it again; run again, it resumes from its checkpoints."""
    storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    attrs = {k: v for k, v in trial.user_attrs.items()
             if k in ("sample", "seed", "source_trial", "source", "config", "overrides")}
    ostudy.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)


def release(study: Study, storage: optuna.storages.BaseStorage, stage: str, worker: str) -> int:
    """Re-enqueues the trials a worker of this name left running: a requeued SLURM task (same array job and task
    id) that was killed mid-trial. Returns how many."""
    released = 0
    for part in study.plan(stage):
        ostudy = optuna.load_study(study_name=optuna_name(study, part), storage=storage)
        for trial in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") == worker:
                _requeue(storage, ostudy, trial)
                released += 1
    return released


@contextlib.contextmanager
def _claim_lock(results_dir: Path) -> Iterator[None]:
    with open(results_dir / ".claim.lock", "w") as handle:
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
        trial.report(row["fid"], step)
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
    best = [run_best_fid(r["rows"]) for r in runs]
    # The paper's rule: a run that diverged or collapsed after a finite FID keeps its best one (see
    # best_configuration).
    if all(math.isfinite(b) for b in best):
        trial.study.tell(trial, sum(best) / len(best))
    else:
        trial.study.tell(trial, state=TrialState.FAIL)


def work(study: Study, results_dir: Path, stage: str = "search", worker: str | None = None) -> int:
    """A worker: claims and runs trials of the stage until its budget is spent. Returns how many it ran.

    A named worker first takes back what a previous life of it left running (a requeued SLURM task)."""
    storage = open_storage(study, results_dir)
    if worker is not None:
        release(study, storage, stage, worker)
    done = 0
    while (claimed := claim(study, storage, results_dir, stage, worker)) is not None:
        run_claimed(study, results_dir, *claimed)
        done += 1
    return done


def _existing(storage: optuna.storages.BaseStorage) -> set[str]:
    return {s.study_name for s in storage.get_all_studies()}


def finished_trials(study: Study, storage: optuna.storages.BaseStorage, stage: str) -> dict[tuple[str, str, int], str]:
    """Every trial of the stage that has ended, by (dataset, loss, sample), described in one line: its status, its
    best FID and its training speed (steps per second over its runs)."""
    out, existing = {}, _existing(storage)
    for part in study.plan(stage):
        if optuna_name(study, part) not in existing:
            continue
        for trial in optuna.load_study(study_name=optuna_name(study, part), storage=storage).get_trials(deepcopy=False):
            status, runs = trial.user_attrs.get("status"), trial.user_attrs.get("runs", [])
            if status is None or status == "interrupted" or trial.state == TrialState.RUNNING:
                continue
            best = min((run_best_fid(run["rows"]) for run in runs), default=math.inf)
            seconds = sum(run.get("train_seconds", 0.0) for run in runs)
            speed = f", {sum(run['steps_done'] for run in runs) / seconds:.1f} steps/s" if seconds else ""
            sample = trial.user_attrs["sample"]
            out[(part.dataset, part.loss, sample)] = (
                f"{part.dataset} {part.loss} sample {sample}: {status}"
                + (f", best FID {best:.4g}" if math.isfinite(best) else ", no FID") + speed)
    return out


def counts(study: Study, storage: optuna.storages.BaseStorage, stage: str | None = None) -> pd.DataFrame:
    """Per stage and (dataset, loss): trials completed / diverged / collapsed / pruned / failed (one status each),
    running, to do (every sample not finished, the running ones included), the best FID so far (of trials that
    were not pruned) and why a part was skipped (a confirm stage whose search has no completed trial). A pruned
    trial is finished: it is not to do again."""
    finished_statuses = ("completed", "diverged", "collapsed", "pruned", "failed")
    rows, existing = [], _existing(storage)
    for part in study.plan(stage):
        name = optuna_name(study, part)
        ostudy = optuna.load_study(study_name=name, storage=storage) if name in existing else None
        trials = ostudy.get_trials(deepcopy=False) if ostudy else []
        skipped = ostudy.user_attrs.get("skipped", "") if ostudy else ""
        status = [t.user_attrs.get("status") for t in trials]
        finished = {t.user_attrs["sample"] for t, s in zip(trials, status) if s in finished_statuses}
        # COMPLETE only: a pruned trial's value (its last FID, of a shorter training) is not a best FID.
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        row = {"stage": part.stage, "dataset": part.dataset, "loss": part.loss, "budget": part.trials}
        row.update({s: status.count(s) for s in finished_statuses})
        row["running"] = sum(t.state == TrialState.RUNNING for t in trials)
        row["to_do"] = 0 if skipped else part.trials - len(finished)
        row["best_fid"] = min(values) if values else float("nan")
        row["skipped"] = skipped
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(study: Study, storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per (trial, seed, evaluation step) of every finished trial of every stage; a diverged run without
    any evaluation still gets one row, with no metrics, so that it is counted. `status` is the run's own: completed,
    diverged, collapsed or pruned (a pruned trial's rows stay apart from those of runs trained to the end)."""
    rows, existing = [], _existing(storage)
    for part in study.plan():
        if optuna_name(study, part) not in existing:
            continue
        trials = optuna.load_study(study_name=optuna_name(study, part), storage=storage).get_trials(deepcopy=False)
        for trial in trials:
            for run in trial.user_attrs.get("runs", []):
                protocol = run.get("protocol") or {"extractor": run["extractor"]}
                base = {"stage": part.stage, "dataset": part.dataset, "loss": part.loss,
                        "trial": trial.user_attrs["sample"], "seed": run["seed"], "status": run["status"],
                        "protocol": protocol_id(protocol), **protocol,
                        "wall_seconds": trial.user_attrs.get("wall_seconds"),
                        "source_trial": trial.user_attrs.get("source_trial"),
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


def check_results_dir(study: Study, results_dir: Path) -> None:
    """A results folder belongs to one study: refuse to mix a different one into it."""
    import yaml

    saved = results_dir / "study.yaml"
    if saved.exists():
        previous = yaml.safe_load(saved.read_text())
        current = study.model_dump(mode="json")
        for key in ("executor", "data_root", "stages"):  # where it runs, and a confirm stage added later, are fine
            previous.pop(key, None), current.pop(key, None)
        if previous != current:
            raise BenchError(f"{results_dir}: holds a different study (see its study.yaml); "
                             "choose another folder with --results")
