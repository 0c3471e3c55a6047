"""The parts of a study file that are models of their own: a search distribution, the sampler, the budget, the
confirm stage, composite losses, task datasets, variants, the executor's settings and the pruner. bench.study puts them
together and checks them against each other."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from bench import BenchError, data, losses, terms
from bench.config import MAX_EVALUATIONS, StepCount
from bench.tasks import TaskSpec

if TYPE_CHECKING:  # validating a study file needs no optuna: make_pruner imports it when called
    import optuna


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


# The most trials one worker may train at once: each keeps its own networks, optimisers and evaluation samples in memory.
PACK_LIMIT = 64


class LocalExecutor(BaseModel):
    """Worker processes on this machine. With `gpus: auto` and GPUs visible, `workers_per_gpu` workers per GPU
    (each sees only its GPU); without GPUs, `workers` CPU workers."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["local"] = "local"
    workers: int = Field(1, ge=1, description="worker processes when there is no GPU to place them on")
    pack: int = Field(1, ge=1, le=PACK_LIMIT, description="trials one worker trains at once (bench.trial.run_trials):"
                      " the same data set and scoring, any loss, model or hyperparameters")
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
    pack: int = Field(1, ge=1, le=PACK_LIMIT, description="trials one worker trains at once (bench.trial.run_trials):"
                      " the same data set and scoring, any loss, model or hyperparameters")
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
    pack: int = Field(1, ge=1, le=PACK_LIMIT, description="trials one worker trains at once (bench.trial.run_trials):"
                      " the same data set and scoring, any loss, model or hyperparameters")

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
