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
from bench.study import Distribution, Study
from bench.trial import FALLBACK_DEFAULTS, TrialConfig, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

FINISHED = ("completed", "diverged", "failed")


def optuna_name(study: Study, dataset: str, loss: str) -> str:
    return f"{study.name}/{dataset}/{loss}"


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
    # A seed per (dataset, loss) that does not change when other datasets or losses are added.
    seed = (study.sampler.seed * 1_000_003 + zlib.crc32(f"{dataset}/{loss}".encode())) % 2**31
    if study.sampler.name == "grid":
        grid = {name: d.choices for name, d in distributions(study, loss).items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if study.sampler.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def default_params(study: Study, loss: str) -> dict[str, Any]:
    """The loss's default configuration, for the searched parameters that have a default inside the searched
    range; the others are drawn by the sampler like any sample's."""
    spec = losses.get(loss)
    out = {}
    for name, distribution in distributions(study, loss).items():
        value = spec.defaults.get(name, FALLBACK_DEFAULTS.get(name))
        if value is None:
            continue
        if isinstance(distribution, CategoricalDistribution):
            if value in distribution.choices:
                out[name] = value
        elif distribution.low <= value <= distribution.high:
            out[name] = value
    return out


def planned_samples(study: Study, dataset: str, loss: str) -> list[dict[str, Any]]:
    """The hyperparameter samples of one (dataset, loss), in order: the default first (if asked), then the
    sampler's proposals. Drawn up front from a seeded sampler, so they are the same on every run and with
    any number of workers. TPE proposes from finished trials, so only its default sample is planned."""
    samples = [default_params(study, loss)] if study.defaults else []
    if study.sampler.name == "tpe":
        return samples
    space = distributions(study, loss)

    def propose(trial: optuna.Trial) -> float:
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(name, d.choices)
            elif isinstance(d, IntDistribution):
                trial.suggest_int(name, d.low, d.high)
            else:
                trial.suggest_float(name, d.low, d.high, log=d.log)
        return 0.0

    # optimize(), not ask/tell: the grid sampler stops the study when the grid is exhausted.
    scratch = optuna.create_study(sampler=_sampler(study, dataset, loss))
    scratch.optimize(propose, n_trials=max(0, study.budget.samples - len(samples)))
    return samples + [trial.params for trial in scratch.trials]


def prepare(study: Study, results_dir: Path) -> optuna.storages.BaseStorage:
    """Creates each Optuna study once, enqueues its samples, and re-enqueues trials a dead process left running."""
    storage = open_storage(study, results_dir)
    for dataset, loss, _ in study.plan():
        ostudy = optuna.create_study(study_name=optuna_name(study, dataset, loss), storage=storage,
                                     direction="minimize", load_if_exists=True)
        trials = ostudy.get_trials(deepcopy=False)
        if not trials:
            for index, params in enumerate(planned_samples(study, dataset, loss)):
                ostudy.enqueue_trial(params, user_attrs={"sample": index}, skip_if_exists=False)
            continue
        for trial in trials:
            # No worker runs while the driver prepares, so a RUNNING trial belongs to a process that died.
            if trial.state == TrialState.RUNNING:
                storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                ostudy.enqueue_trial(trial.params, user_attrs={"sample": trial.user_attrs["sample"]},
                                     skip_if_exists=False)
    return storage


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


def claim(study: Study, storage: optuna.storages.BaseStorage, results_dir: Path) -> tuple[str, str, optuna.Trial] | None:
    """The next trial to run, or None when the budget is spent. Studies are served round-robin by how many
    trials each has claimed, so partial results cover every (dataset, loss)."""
    with _claim_lock(results_dir):
        candidates = []
        for dataset, loss, budget in study.plan():
            ostudy = optuna.load_study(study_name=optuna_name(study, dataset, loss), storage=storage,
                                       sampler=_sampler(study, dataset, loss))
            trials = ostudy.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            taken = _samples_taken([t for t in trials if t.state != TrialState.WAITING])
            if waiting or (study.sampler.name == "tpe" and len(_samples_taken(trials)) < budget):
                candidates.append((len(taken), dataset, loss, ostudy, waiting, len(_samples_taken(trials))))
        if not candidates:
            return None
        _, dataset, loss, ostudy, waiting, next_sample = min(candidates, key=lambda c: c[0])
        trial = ostudy.ask(distributions(study, loss))
        if not waiting:  # a fresh TPE proposal
            trial.set_user_attr("sample", next_sample)
        return dataset, loss, trial


def run_claimed(study: Study, results_dir: Path, dataset: str, loss: str, trial: optuna.Trial) -> None:
    """Trains the claimed sample once per seed and records everything on the Optuna trial."""
    sample = trial.user_attrs["sample"]
    params = {**study.fixed_params(loss), **trial.params}
    runs, best = [], []
    started = time.time()
    try:
        for seed in study.seeds:
            config = TrialConfig(**study.trial_fields(dataset, loss), **params, seed=seed)
            out = results_dir / "trials" / f"{dataset}-{loss}-{sample:04d}-seed{seed}"
            result = run_trial(config, out)
            runs.append({"seed": seed, "status": result.status, "rows": result.rows, "extractor": result.extractor,
                         "steps_done": result.steps_done, "train_seconds": result.train_seconds,
                         "eval_seconds": result.eval_seconds, "params": config.resolved().hyperparameters()})
            if result.best_fid is not None:
                best.append(result.best_fid)
    except Exception as error:  # a broken trial must not take the worker (and the rest of the study) down
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", "".join(traceback.format_exception_only(error)).strip()[-2000:])
        trial.study.tell(trial, state=TrialState.FAIL)
        return
    status = "diverged" if any(r["status"] == "diverged" for r in runs) else "completed"
    trial.set_user_attr("runs", runs)
    trial.set_user_attr("status", status)
    trial.set_user_attr("wall_seconds", round(time.time() - started, 3))
    if best and status == "completed":
        trial.study.tell(trial, sum(best) / len(best))
    else:
        trial.study.tell(trial, state=TrialState.FAIL)


def work(study: Study, results_dir: Path) -> int:
    """A worker: claims and runs trials until the budget is spent. Returns how many it ran."""
    storage = open_storage(study, results_dir)
    done = 0
    while (claimed := claim(study, storage, results_dir)) is not None:
        run_claimed(study, results_dir, *claimed)
        done += 1
    return done


def counts(study: Study, storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """Per (dataset, loss): trials completed / diverged / failed / running / to do, and the best FID so far."""
    rows = []
    for dataset, loss, budget in study.plan():
        trials = optuna.load_study(study_name=optuna_name(study, dataset, loss), storage=storage).get_trials(
            deepcopy=False)
        status = [t.user_attrs.get("status") for t in trials]
        finished = {t.user_attrs["sample"] for t, s in zip(trials, status) if s in FINISHED}
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        row = {"dataset": dataset, "loss": loss, "budget": budget}
        row.update({s: status.count(s) for s in FINISHED})
        row["running"] = sum(t.state == TrialState.RUNNING for t in trials)
        row["to_do"] = budget - len(finished)
        row["best_fid"] = min(values) if values else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(study: Study, storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per (trial, seed, evaluation step) of every finished trial; a diverged run without any
    evaluation still gets one row, with no metrics, so that it is counted."""
    rows = []
    for dataset, loss, _ in study.plan():
        trials = optuna.load_study(study_name=optuna_name(study, dataset, loss), storage=storage).get_trials(
            deepcopy=False)
        for trial in trials:
            for run in trial.user_attrs.get("runs", []):
                base = {"dataset": dataset, "loss": loss, "trial": trial.user_attrs["sample"], "seed": run["seed"],
                        "status": run["status"], "extractor": run["extractor"],
                        "wall_seconds": trial.user_attrs.get("wall_seconds"),
                        **{f"param_{k}": v for k, v in run["params"].items()}}
                for row in run["rows"] or [{"step": run["steps_done"]}]:
                    rows.append({**base, **row})
    columns = ["dataset", "loss", "trial", "seed", "step", "status", "fid", "kid"]
    table = pd.DataFrame(rows)
    for column in columns:
        if column not in table:
            table[column] = pd.Series(dtype=float)
    rest = [c for c in table.columns if c not in columns]
    return table[columns + rest].sort_values(["dataset", "loss", "trial", "seed", "step"], kind="stable")


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
        previous.pop("executor", None), current.pop("executor", None)  # more or fewer workers is fine
        if previous != current:
            raise BenchError(f"{results_dir}: holds a different study (see its study.yaml); "
                             "choose another folder with --results")
