"""A study: datasets × losses × a hyperparameter search space × a compute budget, read from YAML.

The file is validated completely before any work starts; every problem is reported as one line
`FILE: field.path: what is expected`, and the CLI exits with code 2 without writing anything.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from bench import BenchError, data, feature_nets, losses, models, registry
from bench.config import HYPERPARAMETERS, TRANSLATION_MODEL, TrialConfig
from bench.metric_registry import METRICS
from bench.metrics import MetricsConfig
from bench.study_fields import (Budget, Composite, Confirm, Distribution, Executor, LocalExecutor, Param, Pruner, Sampler,
                                SlurmExecutor, TaskDataset, Variant)

STAGES = ("search", "confirm")
Stage = Literal["search", "confirm"]
# A study's `storage` naming an Optuna journal file rather than a database: journal:///absolute/path.
JOURNAL_URL = "journal://"


class StudyError(BenchError):
    """A study file that cannot be run, with a one-line reason naming the file and field."""


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
    stop_on_collapse: bool = Field(True, description="stop a trial at the evaluation that finds it collapsed; false: "
                                   "train and score it to the end, as compare_gan v1 did (the paper's studies)")
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
            if kind not in objective.trial_kinds and objective.trial_kinds == ("translation",):
                raise ValueError(f"objective: {self.objective} compares outputs with their true targets, which "
                                 f"only image-to-image tasks have; dataset {dataset} is not one (use fid)")
            if kind not in objective.trial_kinds:
                raise ValueError(f"objective: {self.objective} is a metric of unconditional generation; dataset "
                                 f"{dataset} is an image-to-image task (use psnr, ssim or fid)")
        switch = {"fid": "fid", "f1": "prf"}.get(self.objective)
        if switch is not None and not getattr(self.metrics, switch):
            raise ValueError(f"objective: {self.objective} is computed only with metrics.{switch}: true")
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
            "metrics": self.metrics, "stop_on_collapse": self.stop_on_collapse,
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
