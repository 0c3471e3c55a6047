"""A study's plan: every Optuna study it runs (a stage of one (dataset, loss), a "part"), resolved once from the study
file — search space, fixed values, default sample, trial fields, sampler — for the queue, the workers and the tallies
to work from."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from bench import BenchError
from bench.config import FALLBACK_DEFAULTS, TrialConfig
from bench.storage import optuna_name
from bench.study import STAGES, Study
from bench.study_fields import Distribution

Sample = tuple[dict[str, Any], dict[str, Any]]  # (Optuna params, overrides: values the space does not hold)


@dataclass(frozen=True, eq=False)
class PlannedPart:
    """One Optuna study of a study, resolved: a stage of one (dataset, loss), how many trials it holds, and what its
    trials are made of."""

    stage: str
    dataset: str
    loss: str
    trials: int
    optuna_name: str
    space: dict[str, BaseDistribution]  # the searched hyperparameters
    fixed: dict[str, Any]  # the hyperparameters the study fixes (a variant's among them)
    default: Sample  # the loss's default configuration
    fields: dict[str, Any]  # a TrialConfig's fields but the hyperparameters and the seed
    sampler_name: str
    sampler_seed: int
    with_default: bool  # whether the default configuration is the first sample

    @property
    def steps(self) -> int:
        """Training steps per trial."""
        return self.fields["steps"]

    def sampler(self) -> optuna.samplers.BaseSampler:
        """A fresh sampler of the part: fresh each time, so that a proposal depends on the trials alone, not on what
        the process drew before."""
        if self.sampler_name == "grid":
            grid = {name: d.choices for name, d in self.space.items()}
            return optuna.samplers.GridSampler(grid, seed=self.sampler_seed)
        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(seed=self.sampler_seed)
        return optuna.samplers.RandomSampler(seed=self.sampler_seed)

    def planned_samples(self) -> list[Sample]:
        """The part's hyperparameter samples in order: the default first (if asked), then the sampler's proposals.
        Drawn up front from a seeded sampler, so they are the same on every run and with any number of workers. TPE
        proposes from finished trials, so only its default sample is planned."""
        samples = [self.default] if self.with_default else []
        if self.sampler_name == "tpe":
            return samples

        def propose(trial: optuna.Trial) -> float:
            suggest(trial, self.space)
            return 0.0

        # optimize(), not ask/tell: the grid sampler stops the study when the grid is exhausted.
        scratch = optuna.create_study(sampler=self.sampler())
        scratch.optimize(propose, n_trials=max(0, self.trials - len(samples)))
        return samples + [(trial.params, {}) for trial in scratch.trials]

    def hyperparameters(self, params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """What a sample trains: the fixed values, its overrides, its searched values."""
        return {**self.fixed, **overrides, **params}

    def config(self, hyperparameters: dict[str, Any], seed: int) -> TrialConfig:
        """The config of one run of the part."""
        return TrialConfig.from_params(self.fields, hyperparameters, seed)


class Plan:
    """Every part of a study, each resolved once (the study's own `plan`)."""

    def __init__(self, study: Study) -> None:
        self.study = study
        spaces = {loss: distributions(study, loss) for loss in study.losses}
        defaults = {loss: default_sample(study, loss) for loss in study.losses}
        self._parts: dict[str, list[PlannedPart]] = {}
        for stage in STAGES:
            trials = study.budget.samples if stage == "search" else study.confirm.runs
            self._parts[stage] = [
                PlannedPart(stage, dataset, loss, trials, optuna_name(study.name, stage, dataset, loss), spaces[loss],
                            study.fixed_params(loss), defaults[loss], study.trial_fields(dataset, loss),
                            study.sampler.name, sampler_seed(study, dataset, loss), study.defaults)
                for dataset, loss in study.pairs()]

    def parts(self, stage: str | None = None) -> list[PlannedPart]:
        """The parts of one stage, or of every stage of the study."""
        return [part for name in (self.study.stages if stage is None else [stage]) for part in self._parts[name]]

    def part(self, stage: str, dataset: str, loss: str) -> PlannedPart:
        """The part of one stage of a (dataset, loss)."""
        for part in self._parts[stage]:
            if (part.dataset, part.loss) == (dataset, loss):
                return part
        raise BenchError(f"study {self.study.name} does not train {loss} on {dataset}")


def distributions(study: Study, loss: str) -> dict[str, BaseDistribution]:
    """The loss's searched hyperparameters as Optuna distributions."""
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


def sampler_seed(study: Study, dataset: str, loss: str) -> int:
    """A seed per (dataset, loss) that does not change when other datasets or losses are added; a variant draws its
    loss's samples, so the two compare pair by pair."""
    key = study.base_loss(loss) if loss in study.variants else loss
    return (study.sampler.seed * 1_000_003 + zlib.crc32(f"{dataset}/{key}".encode())) % 2**31


def default_sample(study: Study, loss: str) -> Sample:
    """The loss's default configuration (the authors', as compare_gan v1's params.py lists it, with the study's
    `loss_defaults` on top).

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


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> None:
    """Asks the trial for every parameter of `space` (an enqueued trial answers with its own values)."""
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(name, d.low, d.high)
        else:
            trial.suggest_float(name, d.low, d.high, log=d.log)
