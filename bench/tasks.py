"""Image-to-image tasks with a known ground truth, made from any dataset's images, and how training pairs are drawn.

A task maps target images to source images: a model then learns the inverse, from sources back to targets, and is
scored against the true targets. Every image here is float in [0, 1], N×C×H×W.

A task is `fn(targets, generator, **options) -> sources`, registered with `@register(name, description)`; its
keyword-only parameters are its options, each with a default and a type (pydantic validates option values against
the annotations: `Literal[2, 4]`, `Annotated[float, Field(gt=0)]`). All its randomness comes from `generator`, which
may live on a GPU: tensors are drawn on the targets' device with it.

`TaskSpec` is a task as a config names it (task, unpaired, options). Training draws (source, target) indices from a
sampler: a paired task makes each source from its own target (pix2pix); an unpaired one (CycleGAN) makes sources
only from one fixed half of the training split and draws the discriminator's real targets only from the other, so
training never sees a true pair. Evaluation always scores the true pairs of the test split (`test_pairs`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Callable, Literal, Mapping, Union, get_type_hints

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator
from torch import Tensor

from bench import BenchError
from bench.registry import Registry

TaskFn = Callable[..., Tensor]
OptionValue = Union[float, int, bool, str]
Shape = tuple[int, int, int]  # (C, H, W)

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B
INPAINT_FILL = 0.5  # grey: black (0) would vanish into MNIST's black background
SPLIT_SEED = 0  # the unpaired halves' permutation: a property of the dataset, not of the trial's seed


@dataclass(frozen=True)
class Task:
    name: str
    fn: TaskFn
    description: str
    options: Mapping[str, OptionValue]  # option names → defaults: fn's keyword-only parameters
    channels: int | None  # the sources' channels; None: the targets'
    label_format: str | None  # the options in a label, e.g. "x{factor}"; None: "name=value" for each
    shape_check: Callable[..., None] | None  # (image_shape, **options): raises BenchError for images it cannot take
    adapters: Mapping[str, TypeAdapter]  # option name → the validator of its annotated type

    def source_channels(self, target_channels: int) -> int:
        """How many channels the sources of targets with `target_channels` channels have."""
        return target_channels if self.channels is None else self.channels

    def validate(self, options: Mapping[str, Any]) -> dict[str, OptionValue]:
        """The options checked and converted by their types; a one-line ValueError for an unknown name or bad value."""
        valid = {}
        for name, value in options.items():
            if name not in self.adapters:
                raise ValueError(f"unknown option {name!r} for task {self.name!r}; "
                                 f"valid: {', '.join(self.options) or 'none'}")
            try:
                valid[name] = self.adapters[name].validate_python(value)
            except ValidationError as error:
                message = error.errors()[0]["msg"]
                raise ValueError(f"{name}: {message[:1].lower()}{message[1:]}, got {value!r}") from None
        return valid


TASKS: Registry[Task] = Registry("task")
_STRICT = ConfigDict(strict=True)  # no bool for a number, no "4" for 4


def register(
    name: str,
    description: str,
    *,
    channels: int | None = None,
    label: str | None = None,
    check: Callable[..., None] | None = None,
) -> Callable[[TaskFn], TaskFn]:
    """Registers `fn(targets, generator, **options) -> sources` as task `name`.

    `channels`: the sources' channel count if it is not the targets'; `label`: a format string of the options for
    `TaskSpec.label`; `check(image_shape, **options)`: raises a one-line BenchError for images the task cannot take.
    """

    def decorator(fn: TaskFn) -> TaskFn:
        hints = get_type_hints(fn, include_extras=True)
        parameters = [p for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        if any(p.default is inspect.Parameter.empty or p.name not in hints for p in parameters):
            raise ValueError(f"task {name!r}: every option needs a type and a default")
        defaults = MappingProxyType({p.name: p.default for p in parameters})
        adapters = MappingProxyType({p.name: TypeAdapter(hints[p.name], config=_STRICT) for p in parameters})
        TASKS.add(name, Task(name, fn, description, defaults, channels, label, check, adapters), description)
        return fn

    return decorator


def _shape(image_shape: Shape) -> str:
    return "×".join(map(str, image_shape))


# ---------------------------------------------------------------------------------------------------------------------
# the tasks


def _check_superres(image_shape: Shape, *, factor: int) -> None:
    if image_shape[1] % factor or image_shape[2] % factor:
        raise BenchError(f"superres x{factor} needs an image side divisible by {factor}; "
                         f"{_shape(image_shape)} is not")


@register("superres", "super-resolution: area down-sampled by `factor`, then bilinear up-sampled back to the size",
          label="x{factor}", check=_check_superres)
def superres(targets: Tensor, generator: torch.Generator, *, factor: Literal[2, 4] = 2) -> Tensor:
    small = F.avg_pool2d(targets, factor)  # the area average of each factor×factor block
    return F.interpolate(small, size=targets.shape[-2:], mode="bilinear", align_corners=False)


@register("inpaint", "inpainting: a square hole of side `hole`·side at a random place in each image, filled grey",
          label="hole={hole:g}")
def inpaint(targets: Tensor, generator: torch.Generator, *, hole: Annotated[float, Field(gt=0, lt=1)] = 0.5) -> Tensor:
    n, _, height, width = targets.shape
    side = max(1, round(hole * min(height, width)))  # at least a pixel, however small the images
    top = torch.randint(height - side + 1, (n, 1), generator=generator, device=targets.device)
    left = torch.randint(width - side + 1, (n, 1), generator=generator, device=targets.device)
    rows = torch.arange(height, device=targets.device)
    cols = torch.arange(width, device=targets.device)
    in_rows = (rows >= top) & (rows < top + side)  # (n, height)
    in_cols = (cols >= left) & (cols < left + side)  # (n, width)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return targets.masked_fill(mask, INPAINT_FILL)


@register("denoise", "denoising: additive Gaussian noise of standard deviation `sigma`, clamped to [0, 1]",
          label="σ={sigma:g}")
def denoise(
    targets: Tensor, generator: torch.Generator, *, sigma: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.3
) -> Tensor:
    noise = torch.randn(targets.shape, generator=generator, device=targets.device, dtype=targets.dtype)
    return (targets + sigma * noise).clamp(0, 1)


def _luma(images: Tensor) -> Tensor:
    """N×1×H×W grey of N×3×H×W RGB images: ITU-R BT.601 luma."""
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).clamp(0, 1)  # the weights' sum may round above 1


def _grey(images: Tensor) -> Tensor:
    return _luma(images) if images.shape[1] == 3 else images.mean(dim=1, keepdim=True)


@register("edges", "edge map to image: the Sobel gradient magnitude of the grey image, scaled to a maximum of 1",
          channels=1)
def edges(targets: Tensor, generator: torch.Generator) -> Tensor:
    # Replicated borders: a constant image has no edge at its border either.
    padded = F.pad(_grey(targets), (1, 1, 1, 1), mode="replicate")
    # Sobel, separated into a central difference and a [1, 2, 1] smoothing across it: differences of equal pixels
    # are exactly 0, where a 3×3 convolution leaves round-off that the scaling below would blow up to 1.
    dx = padded[..., 2:] - padded[..., :-2]
    dy = padded[..., 2:, :] - padded[..., :-2, :]
    gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]
    gy = dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]
    magnitude = torch.hypot(gx, gy)
    peak = magnitude.amax(dim=(1, 2, 3), keepdim=True)
    return magnitude / peak.clamp_min(torch.finfo(magnitude.dtype).tiny)  # an image without edges stays 0


def _check_colorize(image_shape: Shape) -> None:
    if image_shape[0] != 3:
        raise BenchError(f"colorize needs a colour dataset (3 channels); {_shape(image_shape)} has {image_shape[0]}")


@register("colorize", "colourisation: grey (ITU-R BT.601 luma) to RGB; colour datasets only", channels=1,
          check=_check_colorize)
def colorize(targets: Tensor, generator: torch.Generator) -> Tensor:
    return _luma(targets)


# ---------------------------------------------------------------------------------------------------------------------
# a task as a config names it


class TaskSpec(BaseModel):
    """An image-to-image task: `{task: superres, options: {factor: 4}}`, `unpaired: true` to train without pairs."""

    model_config = ConfigDict(extra="forbid")

    task: str
    unpaired: bool = False
    options: dict[str, OptionValue] = {}

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(TASKS.unknown(task))
        return task

    @field_validator("options")
    @classmethod
    def _own_options(cls, options: dict[str, OptionValue], info: ValidationInfo) -> dict[str, OptionValue]:
        task = info.data.get("task")  # absent when the task itself was rejected
        return TASKS.get(task).validate(options) if task is not None else options

    @property
    def option_values(self) -> dict[str, OptionValue]:
        """Every option of the task: the defaults overridden by `options`."""
        return {**TASKS.get(self.task).options, **self.options}

    @property
    def label(self) -> str:
        """A short name for tables and progress bars: "superres x4", "denoise σ=0.3 unpaired"."""
        task, values = TASKS.get(self.task), self.option_values
        if task.label_format is not None:
            words = [task.label_format.format(**values)]
        else:
            words = [f"{name}={value}" for name, value in values.items()]
        return " ".join([self.task, *words, *(["unpaired"] if self.unpaired else [])])

    def check(self, image_shape: Shape) -> None:
        """Raises a one-line BenchError if the task cannot be made from images of shape (C, H, W)."""
        task = TASKS.get(self.task)
        if task.shape_check is not None:
            task.shape_check(tuple(image_shape), **self.option_values)

    def source_channels(self, target_channels: int) -> int:
        return TASKS.get(self.task).source_channels(target_channels)

    def make_sources(self, targets: Tensor, generator: torch.Generator) -> Tensor:
        """The sources made from float targets N×C×H×W in [0, 1], drawing on `generator` (on the targets' device)."""
        self.check(targets.shape[1:])
        return TASKS.get(self.task).fn(targets, generator, **self.option_values)


# ---------------------------------------------------------------------------------------------------------------------
# training pairs


class PairedSampler:
    """Pix2pix: each source is made from the very target it is trained against."""

    def __init__(self, n_train: int, generator: torch.Generator) -> None:
        if n_train < 1:
            raise BenchError("a paired task needs at least one training image")
        self.n_train, self.generator = n_train, generator

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(source indices, target indices) into the training split, drawn with replacement: the same indices."""
        indices = torch.randint(self.n_train, (batch_size,), generator=self.generator, device=self.generator.device)
        return indices, indices


class UnpairedSampler:
    """CycleGAN's two domains: the training split is cut once into two disjoint halves by a fixed permutation; sources
    are made only from `source_pool`'s images and D's real targets drawn only from `target_pool`, independently, so
    no source is ever trained against the target it was made from."""

    def __init__(self, n_train: int, generator: torch.Generator) -> None:
        if n_train < 2:
            raise BenchError("an unpaired task needs at least two training images, one per half")
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(SPLIT_SEED))
        order = order.to(generator.device)
        self.source_pool, self.target_pool = order[: n_train // 2], order[n_train // 2 :]
        self.generator = generator

    def _pick(self, pool: Tensor, batch_size: int) -> Tensor:
        picks = torch.randint(len(pool), (batch_size,), generator=self.generator, device=self.generator.device)
        return pool[picks]

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(source indices, target indices) into the training split, each drawn with replacement from its own half."""
        return self._pick(self.source_pool, batch_size), self._pick(self.target_pool, batch_size)


def sampler(spec: TaskSpec, n_train: int, generator: torch.Generator) -> PairedSampler | UnpairedSampler:
    """The sampler of training index pairs for `spec`, drawing on the trial's `generator`."""
    return (UnpairedSampler if spec.unpaired else PairedSampler)(n_train, generator)


def test_pairs(spec: TaskSpec, test_targets: Tensor, seed: int) -> Tensor:
    """The evaluation sources, one per test target (true pairs, paired or not): made on the CPU from a generator of
    their own seeded with `seed`, so every evaluation of every trial, on any device, scores the same pairs."""
    sources = spec.make_sources(test_targets.cpu(), torch.Generator().manual_seed(seed))
    return sources.to(test_targets.device)
