"""What a trial is: its config (TrialConfig, validated whole, every default resolvable), the hyperparameters a study
may search, and what one step of its budget counts. Read by studies, the CLI and the trial alike; imports no training
code."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench import BenchError, data, feature_nets, losses, models, terms
from bench.metrics import MetricsConfig
from bench.models import translation as translation_nets
from bench.tasks import TaskSpec

# Hyperparameters that a study may search over; None means "the loss's default" (see losses.py). A custom loss adds
# its own (TrialConfig.loss_params).
HYPERPARAMETERS = losses.HYPERPARAMETERS
FALLBACK_DEFAULTS: dict[str, Any] = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "r1_gamma": 0.0,
                                     "d_batchnorm": False, "optimizer": "adam"}
# What one step of the budget is: a generator update (after n_disc discriminator updates), or — the paper's
# convention, compare_gan v1 abstract_gan.py lines 198-219 and 258-263 — a discriminator update, with G updated
# on the first step and then on every n_disc-th.
StepCount = Literal["g_steps", "d_steps"]
# The most evaluations one trial may have. Each generates and scores thousands of images, so more is a mistake
# (`eval_every: 1`); and the schedule is a list of steps, which at 10^9 steps, each scored, would not fit in memory.
MAX_EVALUATIONS = 10_000
# The model of image-to-image trials (bench.translation): a U-Net generator and a PatchGAN discriminator.
TRANSLATION_MODEL = "unet"


class TrialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("digits", description="the dataset")
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="the dataset loader's options")
    task: TaskSpec | None = Field(None, description="an image-to-image task made from the dataset (bench.tasks); "
                                  "None: unconditional generation")
    image_size: int | None = Field(None, ge=8, description="square image side; None: the dataset's default")
    model: str = Field("mlp", description="the generator and discriminator")
    loss: str = Field("ns_gan", description="the loss: a name from `gan-bench losses`, or package.module:function")
    steps: int = Field(500, ge=1, le=10**9, description="training steps, counted as `count` says")
    count: StepCount = Field("g_steps", description="what a step is: a G update (after n_disc D updates) or a D "
                             "update (the paper's)")
    eval_steps: list[int] | None = Field(None, description="steps at which to score; None: the last step")
    batch_size: int = Field(64, ge=2, description="images per batch")
    z_dim: int = Field(64, ge=1, description="latent dimension")
    z_dist: Literal["uniform", "normal"] = Field("uniform", description="latent distribution: U[-1, 1] or N(0, I); a "
                                                 "loss's own overrides it (vae: normal)")
    # allow_inf_nan=False: NaN fails every bound only by accident of its comparisons, and an infinite lr, penalty or
    # clip passes `gt`/`ge` and would train a run that diverges at once rather than be refused.
    lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="learning rate of both networks")
    beta1: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False, description="Adam's beta1")
    beta2: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False, description="Adam's beta2")
    n_disc: int | None = Field(None, ge=1, description="discriminator steps per generator step")
    gp_lambda: float | None = Field(None, ge=0, allow_inf_nan=False, description="WGAN-GP / DRAGAN penalty weight")
    clip: float | None = Field(None, gt=0, allow_inf_nan=False, description="WGAN weight clipping bound")
    began_gamma: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                      description="BEGAN's diversity ratio gamma")
    began_lambda_k: float | None = Field(None, ge=0, allow_inf_nan=False, description="BEGAN's learning rate of k")
    r1_gamma: float | None = Field(None, ge=0, allow_inf_nan=False, description="R1 penalty weight, 0: off")
    d_batchnorm: bool | None = Field(None, description="batch norm in the discriminator")
    optimizer: Literal["adam", "rmsprop"] | None = Field(None, description="adam, or rmsprop as TF1 had it (the "
                                                         "paper's Adam-vs-RMSProp WGAN experiment)")
    loss_params: dict[str, bool | int | float | str] = Field(
        default_factory=dict, description="a custom loss's own hyperparameters (its keyword arguments) and the "
        "weights of its terms (w_<term>)")
    terms: list[str] = Field(default_factory=list, description="loss terms (bench.terms) added to G's or D's loss, "
                             "each weighted by loss_params w_<term> (default 1)")
    perceptual_net: str = Field(feature_nets.DEFAULT, description="the fixed network of terms that need one "
                                "(perceptual): domain, the dataset's domain classifier; or vgg16 / vgg19[:LAYER], "
                                "ImageNet VGG cut after LAYER (default relu3_3), weights from `gan-bench prefetch "
                                "--vgg NET`")
    init: Literal["model", "compare_gan", "pytorch"] = Field("model", description="weight initialisation: the model's own, compare_gan v1's, "
                              "or PyTorch's layer defaults")
    seed: int = Field(0, description="seed of the initialisation, the batches and the latents")
    device: str = Field("auto", description="auto (CUDA if there is one), cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="torch's CPU threads for this trial; None: leave torch's "
                                "setting (all cores). Results are bit-identical only at the same thread count")
    amp: bool = Field(False, description="bfloat16 autocast on CUDA; ignored on CPU, where it is ~15× slower")
    stop_on_collapse: bool = Field(True, description="stop at the evaluation that finds the run collapsed (see "
                                   "bench.trial.collapsed): its later steps are never trained or scored. False: train "
                                   "and score to the end, as compare_gan v1 did; the status is still collapsed")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="before")
    @classmethod
    def _task_model(cls, raw: Any) -> Any:
        """An image-to-image task trains the U-Net unless a model is given."""
        if isinstance(raw, dict) and raw.get("task") is not None and raw.get("model") is None:
            return {**raw, "model": TRANSLATION_MODEL}
        return raw

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        losses.get(name)
        return name

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        data.check_name(name)
        return name

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in models.MODELS and name != TRANSLATION_MODEL:
            raise ValueError(f"{models.MODELS.unknown(name)}, or {TRANSLATION_MODEL} (image-to-image tasks)")
        return name

    @field_validator("perceptual_net")
    @classmethod
    def _known_feature_net(cls, spec: str) -> str:
        return feature_nets.canonical(spec)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, device: str) -> str:
        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError:
                raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {device!r}") from None
        return device

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        spec = losses.get(self.loss)
        for name in HYPERPARAMETERS:  # a value the loss never reads would silently do nothing
            if getattr(self, name) is not None and name not in spec.hyperparameters:
                raise ValueError(f"{name}: {losses.unused_message(name, self.loss)}")
        for i, name in enumerate(self.terms):
            try:
                term = terms.get(name)
            except BenchError as error:
                raise ValueError(f"terms[{i}]: {name}: {error}") from None
            if spec.discriminator in ("autoencoder", "encoder"):
                kind = "an autoencoder" if spec.discriminator == "autoencoder" else "an encoder"
                raise ValueError(f"terms[{i}]: {name} needs a critic's scores and features; loss {self.loss}'s "
                                 f"discriminator is {kind}")
            if self.task is None and term.needs & terms.TRANSLATION_NEEDS:
                raise ValueError(f"terms[{i}]: {name} is a term of image-to-image tasks (it reads "
                                 f"{', '.join(sorted(term.needs & terms.TRANSLATION_NEEDS))}); {self.dataset} has none")
        if self.task is None and (spec.discriminator == "none" or self.model == TRANSLATION_MODEL):
            raise ValueError(f"{'loss none' if spec.discriminator == 'none' else f'model {TRANSLATION_MODEL}'} is for "
                             "image-to-image tasks only (a dataset entry with a task); unconditional generation needs a "
                             "discriminator and a generator of latents")
        if self.task is not None:
            check_translation(self)
        if self.perceptual_net != feature_nets.DEFAULT and not feature_nets.needs_feature_net(self.terms):
            raise ValueError("perceptual_net: no term of this trial uses a fixed feature network; add one "
                             "(perceptual) or leave it unset")
        weights = [terms.weight_name(name) for name in self.terms]
        for name, value in self.loss_params.items():
            if name in weights:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise ValueError(f"loss_params.{name}: a term's weight must be a finite number ≥ 0, got {value!r}")
            elif name not in spec.params:
                own = f"its own: {', '.join([*spec.params, *weights])}" if spec.params or weights else \
                    "it has none of its own"
                raise ValueError(f"loss_params.{name}: loss {self.loss} has no such hyperparameter ({own})")
        data.check_options(self.dataset, self.dataset_options)
        if self.metrics.prf and (self.task is not None or self.dataset not in data.convex.SHAPES):
            raise ValueError(f"metrics.prf: precision, recall and F1 are measured on the convex polygon sets "
                             f"({', '.join(data.convex.SHAPES)}), unconditional; not on "
                             f"{self.task.label if self.task else self.dataset}")
        if self.eval_steps is not None and (not self.eval_steps or any(not 1 <= s <= self.steps for s in self.eval_steps)):
            raise ValueError(f"eval_steps must be a non-empty list of steps in 1..{self.steps}")
        size = self.image_size or data.default_size(self.dataset)
        if self.task is None:
            models.MODELS.get(self.model).check_shape((1, size, size))
        return self

    @property
    def kind(self) -> str:
        """The kind of trial this config trains (bench.kind.KINDS): image-to-image with a task, else a GAN."""
        return "gan" if self.task is None else "translation"

    def resolved(self) -> TrialConfig:
        """Every default filled in: the loss's own defaults first, then gan-bench's."""
        spec = losses.get(self.loss)
        filled: dict[str, Any] = {
            "image_size": self.image_size or data.default_size(self.dataset),
            "eval_steps": sorted(set(self.eval_steps or [self.steps])),
            "z_dist": spec.latent or self.z_dist,
        }
        for name in HYPERPARAMETERS:
            if getattr(self, name) is None and name in spec.hyperparameters:
                value = spec.defaults.get(name, FALLBACK_DEFAULTS.get(name))
                if value is not None:
                    filled[name] = value
        filled["loss_params"] = {**{p: spec.defaults[p] for p in spec.params},
                                 **{terms.weight_name(t): 1.0 for t in self.terms}, **self.loss_params}
        return self.model_copy(update=filled)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters that are set, a custom loss's own included, by name."""
        return {**{name: getattr(self, name) for name in HYPERPARAMETERS if getattr(self, name) is not None},
                **self.loss_params}

    @classmethod
    def from_params(cls, fields: dict[str, Any], params: dict[str, Any], seed: int) -> TrialConfig:
        """A config from a study's trial fields and one sample's hyperparameters, a custom loss's own among them."""
        return cls(**fields, **{k: v for k, v in params.items() if k in HYPERPARAMETERS},
                   loss_params={k: v for k, v in params.items() if k not in HYPERPARAMETERS}, seed=seed)

def check_translation(config: TrialConfig) -> None:
    """Raises a one-line ValueError for an image-to-image config that cannot train: the wrong model, a loss whose D
    is not a critic, a term the task cannot feed (a paired target in an unpaired task, CycleGAN's inverse in a
    paired one), a D term without a D, or a task the dataset's images do not allow (colorize on grey images)."""
    task, spec = config.task, losses.get(config.loss)
    if config.model != TRANSLATION_MODEL:
        raise ValueError(f"model: image-to-image tasks train model {TRANSLATION_MODEL} (U-Net and PatchGAN), not "
                         f"{config.model}")
    if spec.discriminator not in ("critic", "none"):
        raise ValueError(f"loss: {config.loss}'s discriminator is {spec.discriminator}; image-to-image tasks take a "
                         "critic's loss, or none")
    if config.amp:
        raise ValueError("amp: bfloat16 autocast is not implemented for image-to-image trials; leave it off")
    if spec.discriminator == "none" and not config.terms:
        raise ValueError("loss none with no term trains nothing: give it terms (l1, ssim, ...)")
    size = config.image_size or data.default_size(config.dataset)
    shape = (data.channels(config.dataset), size, size)
    try:
        translation_nets.check_shape(shape)
        task.check(shape)
    except BenchError as error:
        raise ValueError(f"task: {error}") from None
    same_channels = task.source_channels(shape[0]) == shape[0]
    for i, name in enumerate(config.terms):
        term = terms.get(name)
        if "target" in term.needs and task.unpaired:
            raise ValueError(f"terms[{i}]: {name} compares each output with its true target, which an unpaired task "
                             "never trains with; use cycle, identity or patchnce, or a paired task")
        if "inverse" in term.needs and not task.unpaired:
            raise ValueError(f"terms[{i}]: {name} needs CycleGAN's two generators, which only an unpaired task trains "
                             f"({task.task} here is paired: add unpaired: true)")
        if (term.acts_on == "d" or "features" in term.needs) and spec.discriminator == "none":
            raise ValueError(f"terms[{i}]: {name} reads a discriminator; loss none has none")
        # identity and PatchNCE put target-domain images through G (cycle maps them through F instead).
        if {"generator", "nce_head"} & term.needs and "inverse" not in term.needs and not same_channels:
            raise ValueError(f"terms[{i}]: {name} feeds target-domain images to G, whose input has "
                             f"{task.source_channels(shape[0])} channel(s) in {task.task}, not {shape[0]}")


def g_updates(count: StepCount, steps: int, n_disc: int) -> int:
    """How many generator updates `steps` steps make (the VAE, which has no separate G update, aside)."""
    if count == "g_steps":
        return steps
    return 1 + math.ceil((steps - 1) / n_disc)  # the first step, then steps t = 1, 1 + n_disc, ... below `steps`


def step_updates(count: StepCount, step: int, n_disc: int) -> tuple[int, bool]:
    """(D updates, whether G is updated) at step `step` (1-based) of the budget.

    With d_steps, as compare_gan v1 (abstract_gan.py line 207: `(counter - 1) % disc_iters == 0 or g_loss is None`,
    counter from 0): G follows the D update of the first step and of every step t with (t - 1) % n_disc == 0, so 100
    steps at n_disc 5 are 100 D and 21 G updates.
    """
    if count == "g_steps":
        return n_disc, True
    t = step - 1
    return 1, t == 0 or (t - 1) % n_disc == 0
