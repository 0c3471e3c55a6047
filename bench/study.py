"""A study: datasets × losses × a hyperparameter search space × a compute budget, read from YAML.

The file is validated completely before any work starts; every problem is reported as one line
`FILE: field.path: what is expected`, and the CLI exits with code 2 without writing anything.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from bench import BenchError, data, feature_nets, losses, models, registry, terms
from bench.metrics import METRICS, MetricsConfig
from bench.tasks import TaskSpec
from bench.config import HYPERPARAMETERS, MAX_EVALUATIONS, TRANSLATION_MODEL, StepCount, TrialConfig


class StudyError(BenchError):
    """A study file that cannot be run, with a one-line reason naming the file and field."""


class Distribution(BaseModel):
    """A searched hyperparameter: `{dist: loguniform, low: 1e-5, high: 1e-2}`, `{dist: choice, values: [1, 5]}`."""

    model_config = ConfigDict(extra="forbid")

    dist: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = Field(None, allow_inf_nan=False)  # NaN would pass every range check below: it compares false
    high: float | None = Field(None, allow_inf_nan=False)
    values: list[Union[bool, int, float, str]] | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> Distribution:
        if self.dist == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty list 'values'")
            if self.low is not None or self.high is not None:
                raise ValueError("choice takes 'values', not low/high")
            if len({repr(v) for v in self.values}) != len(self.values):
                raise ValueError("choice values must be distinct")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.dist} needs 'low' and 'high'")
        if self.values is not None:
            raise ValueError(f"{self.dist} takes low/high, not 'values'")
        if self.dist == "loguniform" and self.low <= 0:
            raise ValueError("low: must be > 0 for loguniform")
        if self.dist == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("low and high must be integers for int")
        if self.high < self.low or (self.high == self.low and self.dist != "int"):
            raise ValueError(f"empty range: high must be > low (low={self.low:g}, high={self.high:g})")
        return self


Param = Union[Distribution, bool, int, float, str]


class Sampler(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["random", "grid", "tpe"] = "random"
    seed: int = 0


PerDataset = Union[int, dict[str, int]]


class Budget(BaseModel):
    """Samples per (dataset, loss) and the length of each trial. `steps`, `eval_every` and `evaluations` take one
    number or one per dataset (`{mnist: 15625, cifar10: 78125}`), as the paper trains each dataset for its own
    number of epochs."""

    model_config = ConfigDict(extra="forbid")

    # Bounded: every sample is drawn and enqueued up front, so 10^30 would hang the driver rather than fail.
    samples: int = Field(ge=1, le=1_000_000, description="hyperparameter samples per (dataset, loss)")
    steps: PerDataset = Field(description="training steps per trial, counted as `count` says")
    count: StepCount = Field("g_steps", description="g_steps: a step is n_disc D updates and one G update; "
                             "d_steps: a step is one D update, G follows every n_disc-th (the paper's)")
    eval_every: PerDataset | None = Field(None, description="score every N steps (and at the last step)")
    evaluations: PerDataset | None = Field(None, description="score N times, evenly spaced, the last at the end")

    @field_validator("steps", "eval_every", "evaluations", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        """Before pydantic's own parsing, so that every wrong value gets the same message with the range in it. YAML
        1.1 reads `1e30` (no dot) as a string, which pydantic would report as an unparsable integer."""
        for key, number in (value.items() if isinstance(value, dict) else [(None, value)]):
            integral = (isinstance(number, int) and not isinstance(number, bool)) or (
                isinstance(number, float) and number.is_integer())
            if number is not None and not (integral and 1 <= number <= 10**9):
                exponent = isinstance(number, str) and re.fullmatch(r"[-+]?[0-9.]+[eE][-+]?[0-9]+", number)
                raise ValueError(f"{f'{key}: ' if key is not None else ''}must be an integer in 1..10^9, got {number!r}"
                                 + (" (YAML reads a number with an exponent but no dot as text)" if exponent else ""))
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Budget:
        if self.eval_every is not None and self.evaluations is not None:
            raise ValueError("give eval_every or evaluations, not both")
        return self

    @staticmethod
    def _for(value: PerDataset | None, dataset: str) -> int | None:
        return value.get(dataset) if isinstance(value, dict) else value

    def check_datasets(self, datasets: list[str]) -> None:
        for field in ("steps", "eval_every", "evaluations"):
            value = getattr(self, field)
            if isinstance(value, dict):
                for name in value:
                    if name not in datasets:
                        raise ValueError(f"budget.{field}.{name}: not one of the study's datasets")
                for name in datasets:
                    if name not in value:
                        raise ValueError(f"budget.{field}: no value for dataset {name}")
        for name in datasets:  # before eval_steps builds the schedule as a list
            steps, evaluations = self.steps_for(name), self._for(self.evaluations, name)
            every = self._for(self.eval_every, name)
            count, field = (evaluations, "evaluations") if evaluations is not None else (
                steps // every if every else 1, "eval_every")
            if count > MAX_EVALUATIONS:
                where = f"budget.{field}.{name}" if isinstance(getattr(self, field), dict) else f"budget.{field}"
                raise ValueError(f"{where}: {count:,} evaluations of a {steps:,}-step trial; at most "
                                 f"{MAX_EVALUATIONS:,}")

    def steps_for(self, dataset: str) -> int:
        return self._for(self.steps, dataset)

    def eval_steps(self, dataset: str) -> list[int]:
        steps = self.steps_for(dataset)
        evaluations = self._for(self.evaluations, dataset)
        if evaluations is not None:
            return sorted({steps * i // evaluations for i in range(1, evaluations + 1)} - {0})
        every = self._for(self.eval_every, dataset) or steps
        return sorted(set(range(every, steps + 1, every)) | {steps})


class Confirm(BaseModel):
    """The confirm stage: the best search configuration of each (dataset, loss), re-run with fresh seeds."""

    model_config = ConfigDict(extra="forbid")

    runs: int = Field(50, ge=2, le=1_000_000, description="seeds per best configuration (the paper: 50); ≥ 2 for a std")
    first_seed: int = Field(1000, ge=0, description="seeds first_seed, first_seed + 1, …; apart from the search's")
    source: Path | None = Field(None, description="results folder of another study whose search stage gives the "
                                "best configurations (the paper confirms the wide search's); default: this study's")

    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.runs))


class Composite(BaseModel):
    """A loss written as a weighted sum: an adversarial loss plus terms (bench.terms) on G's and on D's loss, each
    with its default weight. In a study's `losses` as `{name, adversarial, g_terms, d_terms}`; each weight is the
    hyperparameter `w_<term>` of that loss, searchable like `lr`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # "+": l1+adv reads as the sum it is
    adversarial: str
    g_terms: dict[str, float] = Field(default_factory=dict)
    d_terms: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _well_formed(self) -> Composite:
        if self.name in losses.LOSSES:
            raise ValueError(f"name: {self.name} is already a registered loss")
        try:
            spec = losses.get(self.adversarial)
        except BenchError as error:
            raise ValueError(f"adversarial: {error}") from None
        if spec.discriminator not in ("critic", "none"):
            raise ValueError(f"adversarial: {self.adversarial}'s discriminator is not a critic; loss terms need one")
        if not self.g_terms and not self.d_terms:
            raise ValueError("give g_terms or d_terms (a loss with no term is its adversarial loss)")
        for side, named in (("g", self.g_terms), ("d", self.d_terms)):
            for name, weight in named.items():
                try:
                    term = terms.get(name)
                except BenchError as error:
                    raise ValueError(f"{side}_terms.{name}: {error}") from None
                if term.acts_on != side:
                    raise ValueError(f"{side}_terms.{name}: a term of {term.acts_on.upper()}'s loss; put it in "
                                     f"{term.acts_on}_terms")
                if not 0 <= weight < math.inf:
                    raise ValueError(f"{side}_terms.{name}: a weight must be a finite number ≥ 0, got {weight}")
        if set(self.g_terms) & set(self.d_terms):
            raise ValueError(f"{', '.join(set(self.g_terms) & set(self.d_terms))}: in both g_terms and d_terms")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """The default weight of each term, by hyperparameter name (w_<term>)."""
        return {terms.weight_name(name): weight for name, weight in {**self.g_terms, **self.d_terms}.items()}


class TaskDataset(TaskSpec):
    """An image-to-image task made from a dataset, under a name of its own, used in the study like a dataset:
    `{name: sr4-mnist, task: superres, dataset: mnist5k, options: {factor: 4}}` in `datasets` (add `unpaired: true`
    to train without pairs). Its name stands for it in every table, folder and per-dataset field."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str

    @model_validator(mode="after")
    def _known_dataset(self) -> TaskDataset:
        if self.name in data.DATASETS:
            raise ValueError(f"name: {self.name} is already a dataset's name")
        try:
            data.DATASETS.get(self.dataset)
        except BenchError as error:
            raise ValueError(f"dataset: {error}") from None
        return self

    def spec(self) -> TaskSpec:
        return TaskSpec(task=self.task, unpaired=self.unpaired, options=self.options)


class Variant(BaseModel):
    """A loss with some hyperparameters fixed, under a name of its own: `{loss: wgan, params: {optimizer: rmsprop}}`.

    It draws the same hyperparameter samples as its loss would (its sampler is seeded by the loss, not the variant's
    name), so a variant and its loss make a paired comparison: v1's Adam-vs-RMSProp experiment trained the same
    100 WGAN tasks once with each optimizer (generate_tasks_lib.py lines 202-218)."""

    model_config = ConfigDict(extra="forbid")

    loss: str
    params: dict[str, Union[bool, int, float, str]] = Field(min_length=1)


STAGES = ("search", "confirm")
Stage = Literal["search", "confirm"]


# A study's `storage` naming an Optuna journal file rather than a database: journal:///absolute/path.
JOURNAL_URL = "journal://"


class LocalExecutor(BaseModel):
    """Worker processes on this machine. With `gpus: auto` and GPUs visible, `workers_per_gpu` workers per GPU
    (each sees only its GPU); without GPUs, `workers` CPU workers."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["local"] = "local"
    workers: int = Field(1, ge=1, description="worker processes when there is no GPU to place them on")
    gpus: Union[Literal["auto", "none"], list[int]] = Field(
        "auto", description="auto: every visible GPU; none: CPU only; or a list of GPU indices")
    workers_per_gpu: int = Field(1, ge=1)


class SlurmExecutor(BaseModel):
    """A SLURM job array through submitit: `workers` tasks, each claiming trials until the stage is done."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["slurm"]
    partition: str | None = Field(None, description="sbatch --partition; default: the cluster's default partition")
    account: str | None = None
    qos: str | None = None
    time_min: int = Field(60, ge=1, description="time limit per task; a task that reaches it requeues itself")
    workers: int = Field(1, ge=1, description="array tasks")
    array_parallelism: int | None = Field(None, ge=1, description="at most this many tasks at once (sbatch %N)")
    cpus_per_task: int = Field(1, ge=1)
    gpus_per_task: int = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    sbatch: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="any other sbatch option, without the leading --")
    setup: list[str] = Field(default_factory=list, description="shell lines before the worker starts")
    log_dir: Path | None = Field(None, description="submitit's folder; default: <results>/slurm (shared filesystem)")


class CustomExecutor(BaseModel):
    """An executor of one's own, `package.module:Class` (a bench.executors.Executor subclass): its settings are this
    entry, its own fields beside name and workers."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="package.module:Class")
    workers: int = Field(1, ge=1)

    @field_validator("name")
    @classmethod
    def _an_extension(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name):
            raise ValueError(f"{name!r} is neither local, slurm nor an executor of one's own, package.module:Class")
        return name


def _executor_kind(entry: Any) -> str:
    """Which settings model an `executor` entry is: local (the default), slurm, or custom for any other name."""
    name = entry.get("name", "local") if isinstance(entry, dict) else getattr(entry, "name", "local")
    return name if name in ("local", "slurm") else "custom"


Executor = Annotated[Union[Annotated[LocalExecutor, Tag("local")], Annotated[SlurmExecutor, Tag("slurm")],
                           Annotated[CustomExecutor, Tag("custom")]], Discriminator(_executor_kind)]


class Pruner(BaseModel):
    """Stops search trials early on their FID curve (Optuna's intermediate values, one per evaluation step): `median`
    (Optuna's MedianPruner), `hyperband` (HyperbandPruner, whose largest resource is the trial's steps), or `none`,
    the default and the paper's: every sample trains for its whole budget, so that the min-FID-vs-budget curve
    compares losses at equal compute. Steps are training steps, counted as `budget.count` says."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = Field(5, ge=0, description="median: trials that must complete before any is pruned")
    n_warmup_steps: int = Field(0, ge=0, description="median: no trial is pruned before this step")
    min_resource: int = Field(1, ge=1, description="hyperband: steps every trial trains before it can be pruned")
    reduction_factor: int = Field(3, ge=2, description="hyperband: 1 / the share of trials each rung keeps")

    @model_validator(mode="after")
    def _own_parameters(self) -> Pruner:
        own = {"none": set(), "median": {"n_startup_trials", "n_warmup_steps"},
               "hyperband": {"min_resource", "reduction_factor"}}[self.name]
        # A study passed on whole (to workers, into study.yaml) sets every field, so only values that differ from
        # the defaults are another pruner's parameters.
        foreign = sorted(field for field in self.model_fields_set - own - {"name"}
                         if getattr(self, field) != type(self).model_fields[field].default)
        if foreign:
            raise ValueError(f"{foreign[0]}: not a parameter of the {self.name} pruner (its own: "
                             f"{', '.join(sorted(own))})" if own else f"{foreign[0]}: pruner none takes no parameters")
        return self

    def make_pruner(self, steps: int) -> optuna.pruners.BasePruner:
        """The Optuna pruner for trials of `steps` steps. `none` gives NopPruner, not None: optuna.load_study would
        fall back to its default, a MedianPruner."""
        import optuna  # here: validating a study file needs no optuna

        if self.name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials,
                                               n_warmup_steps=self.n_warmup_steps)
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_resource, max_resource=steps,
                                                  reduction_factor=self.reduction_factor)
        return optuna.pruners.NopPruner()


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    tasks: dict[str, TaskDataset] = Field(default_factory=dict, description="image-to-image tasks: given in `datasets` "
                                          "as {name, task, dataset, unpaired, options}")
    datasets: list[str] = Field(min_length=1)
    dataset_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per dataset, its options")
    variants: dict[str, Variant] = Field(default_factory=dict, description="named losses with fixed hyperparameters")
    composites: dict[str, Composite] = Field(default_factory=dict, description="losses that are weighted sums of "
                                             "terms: given in `losses` as {name, adversarial, g_terms, d_terms}")
    losses: list[str] = Field(min_length=1)
    losses_per_dataset: dict[str, list[str]] = Field(default_factory=dict, description="per dataset, the losses of "
                                                     "`losses` it trains (default: all of them)")
    objective: str = Field("fid", description="what the search optimises and the report ranks by: a metric that "
                           "may be one (fid, minimised; psnr / ssim of image-to-image outputs, maximised), or a custom "
                           "one of metrics.extra")
    model: str = "mlp"
    model_per_dataset: dict[str, str] = Field(default_factory=dict)
    image_size: int | None = Field(None, ge=8)
    batch_size: int = Field(64, ge=2)
    z_dim: int = Field(64, ge=1)
    z_dist: Literal["uniform", "normal"] = "uniform"
    init: Literal["model", "compare_gan", "pytorch"] = "model"
    perceptual_net: str = Field(feature_nets.DEFAULT, description="the fixed network of the losses whose terms need "
                                "one (perceptual): domain, or vgg16 / vgg19[:LAYER] (`gan-bench prefetch` fetches it)")
    search_space: dict[str, Param] = Field(default_factory=dict)
    loss_search_space: dict[str, dict[str, Param]] = Field(default_factory=dict)
    loss_defaults: dict[str, dict[str, Union[bool, int, float, str]]] = Field(
        default_factory=dict, description="per loss, values of its default sample that differ from the registry's")
    sampler: Sampler = Field(default_factory=Sampler)
    budget: Budget
    defaults: bool = Field(True, description="enqueue each loss's default configuration as its first sample")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    stages: list[Stage] = Field(default_factory=lambda: ["search"], min_length=1)
    confirm: Confirm = Field(default_factory=Confirm)
    data_root: Path | None = Field(None, description="raw datasets and their caches; default: $GAN_BENCH_DATA")
    device: str = "auto"
    threads: int = Field(1, ge=1, description="torch threads per trial: part of what a trial computes, since the "
                         "thread count changes the order of float sums; independent of the worker count")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    executor: Executor = Field(default_factory=LocalExecutor)
    storage: str | None = Field(None, description="an Optuna storage URL (a database), or journal:///PATH (a journal "
                                "file); default: the journal file optuna.journal in the results folder")
    pruner: Pruner = Field(default_factory=Pruner, description="early stopping of search trials; default none")

    @field_validator("objective")
    @classmethod
    def _an_objective(cls, name: str) -> str:
        builtin = [n for n, metric in METRICS.items() if metric.objective]
        try:
            objective = METRICS.get(name).objective
        except BenchError:
            objective = False
        if not objective:
            raise ValueError(f"{name!r} is not a metric a study may optimise; valid: {', '.join(builtin)}, or a custom "
                             "metric package.module:function made with bench.metrics.metric(objective=True)")
        return name

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, names: list[str], info: ValidationInfo) -> list[str]:
        for i, name in enumerate(names):
            if name not in (info.data.get("tasks") or {}):
                try:
                    data.DATASETS.get(name)
                except BenchError as error:
                    raise ValueError(f"[{i}] {error}") from None
        return _distinct(names)

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, variants: dict[str, Variant]) -> dict[str, Variant]:
        for name, variant in variants.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"{name}: a variant's name may use only letters, digits, '_', '.' and '-'")
            if name in losses.LOSSES:
                raise ValueError(f"{name}: already the name of a registered loss")
            try:
                losses.get(variant.loss)
            except BenchError as error:
                raise ValueError(f"{name}.loss: {error}") from None
        return variants

    @model_validator(mode="before")
    @classmethod
    def _definitions_in_place(cls, raw: Any) -> Any:
        """A composite loss is written in `losses`, an image-to-image task in `datasets`, where each is used: each is
        kept in `composites` / `tasks`, its name in the list."""
        for field, store, what in (("losses", "composites", "a composite loss"),
                                   ("datasets", "tasks", "an image-to-image task")):
            if isinstance(raw, dict) and isinstance(raw.get(field), list):
                raw = {**raw, **dict(zip((field, store), _split_definitions(raw[field], raw.get(store), field, what)))}
        return raw

    @field_validator("losses")
    @classmethod
    def _known_losses(cls, names: list[str], info: ValidationInfo) -> list[str]:
        for i, name in enumerate(names):
            if name in (info.data.get("variants") or {}) or name in (info.data.get("composites") or {}):
                continue
            try:
                losses.get(name)
            except BenchError as error:
                raise ValueError(f"[{i}] {error}") from None
        return _distinct(names)

    @field_validator("perceptual_net")
    @classmethod
    def _used_feature_net(cls, spec: str, info: ValidationInfo) -> str:
        """A network no loss reads would silently do nothing. The composites, the only losses with terms, are
        validated before this field (declared after them)."""
        spec = feature_nets.canonical(spec)
        composites = (info.data.get("composites") or {}).values()
        if spec != feature_nets.DEFAULT and not feature_nets.needs_feature_net(
                name for c in composites for name in [*c.g_terms, *c.d_terms]):
            raise ValueError("no loss of the study has a term that uses a fixed feature network (perceptual)")
        return spec

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str | None) -> str | None:
        """A URL Optuna's RDB storage can open. Optuna would find out only when the driver opens it, after the results
        folder and its study.yaml are written; creating the SQLAlchemy engine, as Optuna does, parses the URL and
        imports its driver without connecting."""
        if url is None:
            return url
        if url.startswith("journal:"):  # an Optuna journal file, which several results folders may share
            if not url.startswith(JOURNAL_URL + "/") or url.endswith("/"):
                raise ValueError(f"a journal storage names an absolute file path, e.g. {JOURNAL_URL}/shared/lab.journal;"
                                 f" got {url!r}")
            return url
        from sqlalchemy import create_engine, make_url  # a dependency of optuna
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        example = "e.g. sqlite:///optuna.db or postgresql://user@host/database"
        try:
            parsed = make_url(url)
            create_engine(parsed).dispose()
        except NoSuchModuleError:  # an ArgumentError too: caught first
            raise ValueError(f"{parsed.drivername!r} is not a database SQLAlchemy can open; expected a database URL, "
                             f"{example}; got {parsed.render_as_string(hide_password=True)!r}") from None
        except ArgumentError:
            raise ValueError(f"not a database URL, {example}; got {url!r}") from None
        except ImportError as error:
            hint = "; pip install 'gan-bench[postgres]'" if parsed.get_backend_name() == "postgresql" else ""
            raise ValueError(f"the driver of {parsed.drivername!r} is not installed "
                             f"({' '.join(str(error).split())}){hint}") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database is not shared with the workers: name a file, "
                             "e.g. sqlite:///optuna.db")
        return url

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        return _distinct(seeds)

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, stages: list[str]) -> list[str]:
        if stages not in (["search"], ["search", "confirm"]):
            raise ValueError("expected [search] or [search, confirm]: confirm starts from the search's results")
        return stages

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        self.budget.check_datasets(self.datasets)
        for name in self.tasks:
            if name not in self.datasets:
                raise ValueError(f"tasks.{name}: not one of the study's datasets")
        for dataset, names in self.losses_per_dataset.items():
            if dataset not in self.datasets:
                raise ValueError(f"losses_per_dataset.{dataset}: not one of the study's datasets")
            if not names:
                raise ValueError(f"losses_per_dataset.{dataset}: give at least one loss")
            for i, name in enumerate(_distinct(names)):
                if name not in self.losses:
                    raise ValueError(f"losses_per_dataset.{dataset}[{i}]: {name} is not one of the study's losses")
        trained = {loss for _, loss in self.pairs()}
        for loss in self.losses:
            if loss not in trained:
                raise ValueError(f"losses: {loss} is trained on no dataset (losses_per_dataset leaves it out everywhere)")
        objective = METRICS.get(self.objective)
        if objective.compute is not None and self.objective not in self.metrics.extra:
            raise ValueError(f"objective: {self.objective} is computed only when metrics.extra lists it")
        for dataset in self.datasets if objective.trial_kinds is not None else []:
            kind = "translation" if dataset in self.tasks else "gan"
            if kind not in objective.trial_kinds:
                raise ValueError(f"objective: {self.objective} compares outputs with their true targets, which "
                                 f"only image-to-image tasks have; dataset {dataset} is not one (use fid)")
        if isinstance(self.executor, SlurmExecutor) and self.executor.cpus_per_task < self.threads:
            raise ValueError(f"executor.cpus_per_task: {self.executor.cpus_per_task} is fewer than the study's threads "
                             f"({self.threads}); give each task at least as many CPUs as a trial's threads")
        for name in [self.model, *self.model_per_dataset.values()]:
            if name not in models.MODELS:
                raise ValueError(f"model: {models.MODELS.unknown(name)}")
        for name in self.variants:
            if name not in self.losses:
                raise ValueError(f"variants.{name}: not one of the study's losses")
        for field in ("model_per_dataset", "dataset_options"):
            for dataset in getattr(self, field):
                if dataset not in self.datasets:
                    raise ValueError(f"{field}.{dataset}: not one of the study's datasets")
        for dataset, options in self.dataset_options.items():
            try:
                data.check_options(dataset, options)
            except BenchError as error:
                raise ValueError(f"dataset_options.{dataset}: {error}") from None
        # A hyperparameter the loss never reads would silently do nothing: the shared space applies each one to the
        # losses that read it (at least one must), a loss's own entries must be read by that loss.
        for name in self.composites:
            if name not in self.losses:
                raise ValueError(f"composites.{name}: not one of the study's losses")
            if name in self.variants:
                raise ValueError(f"composites.{name}: also a variant's name")
        specs = {loss: self.loss_spec(loss) for loss in self.losses}
        for name in self.search_space:
            if not any(name in spec.hyperparameters for spec in specs.values()):
                raise ValueError(f"search_space.{name}: " + (
                    f"no loss of the study uses it; losses that do: {', '.join(losses.users(name))}"
                    if name in HYPERPARAMETERS else _UNKNOWN))
        for field in ("loss_search_space", "loss_defaults"):
            for loss, space in getattr(self, field).items():
                if loss not in self.losses:
                    raise ValueError(f"{field}.{loss}: not one of the study's losses")
                _check_used(space, specs[loss], loss, prefix=f"{field}.{loss}.")
        for name, variant in self.variants.items():
            _check_used(variant.params, specs[name], name, prefix=f"variants.{name}.params.")
        if self.sampler.name == "grid":
            for loss in self.losses:
                for name, param in self.space(loss).items():
                    if isinstance(param, Distribution) and param.dist != "choice":
                        raise ValueError(f"sampler: grid needs every searched parameter to be a choice; "
                                         f"{name} is {param.dist}")
                if self.grid_size(loss) < self.budget.samples - int(self.defaults):
                    raise ValueError(f"budget.samples: {self.budget.samples} exceeds the grid of loss {loss} "
                                     f"({self.grid_size(loss)} points{' + the default' if self.defaults else ''})")
        for dataset, loss in self.pairs():  # each trial config must be valid: catch it now, not in a worker
            try:
                TrialConfig(**self.trial_fields(dataset, loss), seed=self.seeds[0])
            except ValidationError as error:
                where = f"losses_per_dataset.{dataset}" if dataset in self.losses_per_dataset else "losses"
                raise ValueError(f"{where}: {loss} on {dataset}: "
                                 f"{validation_message(error)}") from None
        for loss in self.losses:  # so must each fixed value and default sample
            variant = self.variants[loss].params if loss in self.variants else {}
            base, own = self.base_loss(loss), self.loss_search_space.get(loss, {})
            fields = [(f"variants.{loss}.params.{n}" if n in variant else f"loss_search_space.{loss}.{n}" if n in own
                       else f"loss_search_space.{base}.{n}" if n in self.loss_search_space.get(base, {})
                       else f"search_space.{n}", n, v) for n, v in self.fixed_params(loss).items()]
            fields += [(f"loss_defaults.{loss}.{n}", n, v) for n, v in self.default_overrides(loss).items()]
            dataset = next(d for d, l in self.pairs() if l == loss)
            for where, name, value in fields:
                try:
                    TrialConfig.from_params(self.trial_fields(dataset, loss), {name: value}, self.seeds[0])
                except ValidationError as error:
                    raise ValueError(f"{where}: {error.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        return self

    def base_dataset(self, dataset: str) -> str:
        """The registered dataset a study dataset loads: an image-to-image task's, else the name itself."""
        return self.tasks[dataset].dataset if dataset in self.tasks else dataset

    def base_loss(self, loss: str) -> str:
        """The registered (or custom) loss a study loss trains: a variant's loss, a composite's adversarial loss,
        else the name itself."""
        if loss in self.composites:
            return self.composites[loss].adversarial
        return self.variants[loss].loss if loss in self.variants else loss

    def loss_spec(self, loss: str) -> losses.LossSpec:
        """The registry's spec of the loss a study loss trains; a composite's adds its term weights as hyperparameters
        of its own, defaulted to the study's weights."""
        spec = losses.get(self.base_loss(loss))
        if loss not in self.composites:
            return spec
        weights = self.composites[loss].weights
        return dataclasses.replace(spec, name=loss, params=(*spec.params, *weights),
                                   defaults={**spec.defaults, **weights})

    def space(self, loss: str) -> dict[str, Param]:
        """The search space of one loss: the shared space, a composite's term weights as fixed values, extended and
        overridden by the loss's own (a variant's: its loss's, then its own), and a variant's fixed parameters over all
        of that."""
        base = self.base_loss(loss)
        reads = self.loss_spec(loss).hyperparameters
        shared = {name: param for name, param in self.search_space.items() if name in reads}
        weights = self.composites[loss].weights if loss in self.composites else {}  # fixed unless searched
        space = {**shared, **weights, **self.loss_search_space.get(base, {}), **self.loss_search_space.get(loss, {})}
        return {**space, **(self.variants[loss].params if loss in self.variants else {})}

    def grid_size(self, loss: str) -> int:
        return math.prod(len(p.values) for p in self.space(loss).values() if isinstance(p, Distribution))

    def trial_fields(self, dataset: str, loss: str) -> dict[str, Any]:
        """Everything of a TrialConfig except the sampled hyperparameters and the seed. `dataset` may name a task."""
        names = [*self.composites[loss].g_terms, *self.composites[loss].d_terms] if loss in self.composites else []
        # Only a loss that reads the feature network gets it: the others' configs stay those of the default.
        net = {"perceptual_net": self.perceptual_net} if feature_nets.needs_feature_net(names) else {}
        task = self.tasks.get(dataset)
        # An image-to-image task trains the U-Net and PatchGAN unless model_per_dataset says otherwise.
        model = self.model_per_dataset.get(dataset, TRANSLATION_MODEL if task else self.model)
        return {
            "dataset": self.base_dataset(dataset), **({"task": task.spec()} if task else {}),
            "dataset_options": self.dataset_options.get(dataset, {}), "loss": self.base_loss(loss),
            "model": model,
            "image_size": self.image_size, "batch_size": self.batch_size, "z_dim": self.z_dim,
            "z_dist": self.z_dist, "init": self.init, "steps": self.budget.steps_for(dataset), "count": self.budget.count,
            "eval_steps": self.budget.eval_steps(dataset), "device": self.device, "threads": self.threads,
            "metrics": self.metrics,
            "terms": names, **net,
        }

    def fixed_params(self, loss: str) -> dict[str, Any]:
        return {k: v for k, v in self.space(loss).items() if not isinstance(v, Distribution)}

    def default_overrides(self, loss: str) -> dict[str, Any]:
        """`loss_defaults` of one loss: a variant's loss's, then the variant's own."""
        return {**self.loss_defaults.get(self.base_loss(loss), {}), **self.loss_defaults.get(loss, {})}

    def pairs(self) -> list[tuple[str, str]]:
        """Every (dataset, loss) the study trains: each dataset with its losses (`losses_per_dataset`, else all)."""
        return [(d, l) for d in self.datasets for l in self.losses_per_dataset.get(d, self.losses)]


def _split_definitions(entries: list, defined: Any, field: str, what: str) -> tuple[list, dict]:
    """(names, definitions) of a list whose entries are names or mappings {name, ...} that define one in place."""
    definitions, names = dict(defined or {}), []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            if not isinstance(entry.get("name"), str):
                raise ValueError(f"{field}[{i}]: {what} needs a name")
            if entry["name"] in definitions:
                raise ValueError(f"{field}[{i}]: {entry['name']} is defined twice")
            definitions[entry["name"]] = entry
            entry = entry["name"]
        names.append(entry)
    return names, definitions


def _distinct(values: list) -> list:
    seen = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"[{i}] {value!r} is listed twice")
        seen.add(value)
    return values


_UNKNOWN = f"unknown hyperparameter; valid: {', '.join(HYPERPARAMETERS)}, or a custom loss's own"


def _check_used(space: dict[str, Any], spec: losses.LossSpec, loss: str, prefix: str) -> None:
    for name in space:
        if name not in spec.hyperparameters:
            raise ValueError(f"{prefix}{name}: " + (losses.unused_message(name, loss) if name in HYPERPARAMETERS
                                                    else _UNKNOWN))


_UNION_TAGS = ("bool", "int", "float", "str")


def validation_message(error: ValidationError) -> str:
    """The first problem as `field.path: message`."""
    first = error.errors()[0]
    # pydantic puts the union member it tried into the path ("Distribution", "function-after[...]", "float").
    parts = [str(p) for p in first["loc"]
             if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or p[:1].isupper()))]
    if parts[:2] in (["executor", "local"], ["executor", "slurm"], ["executor", "custom"]):  # the union's tag
        del parts[1]
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith("[") and parts:  # a list element's index, reported by a field validator
        index, _, message = message.partition("] ")
        parts.append(index[1:])
    head, sep, rest = message.partition(": ")
    if sep and parts and all(p.isidentifier() for p in head.split(".")):  # "low: must be > 0" names a sub-field
        parts.append(head)
        message = rest
    path = ".".join(parts)
    return f"{path}: {message}" if path else message


def load_study(path: Path) -> Study:
    """Reads and validates a study file; raises StudyError with one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file; expected a YAML study file (UTF-8 text)") from None
    except OSError as error:
        raise StudyError(f"{path}: cannot read the study file ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise StudyError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of study fields at the top level")
    registry.add_search_path(path.parent)  # an extension module may sit beside the study file
    try:
        return Study(**raw)
    except ValidationError as error:
        raise StudyError(f"{path}: {validation_message(error)}") from None
    except BenchError as error:
        raise StudyError(f"{path}: {' '.join(str(error).split())}") from None
