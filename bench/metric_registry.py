"""Which metrics exist, and how to read them: each metric's column name in the result rows, its display name, which
way it improves (lower FID, higher F1 ...), whether a study may optimise it, and the kinds of trial whose rows have it;
a user's own metric is named `package.module:function` (a function decorated with `metric`).

This is the description only: computing the metrics is bench.metrics (torch-fidelity). Nothing here imports torch,
so that what only reads results (the report, the tallies' best values) needs none and does not wait for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from bench import BenchError
from bench.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Metric:
    """A score of a trial's result rows. Which way it improves decides the Optuna direction, each run's best
    evaluation, the bootstrap curve, the summary's best and median and the confirm stage's configuration."""

    name: str  # its column in the result rows
    display: str  # its name in tables, figures and messages
    higher_is_better: bool
    objective: bool = False  # a study may optimise it (a study's `objective`)
    trial_kinds: tuple[str, ...] | None = None  # the kinds of trial (bench.kind) whose rows have it; None: every kind
    # compute(generated, real) -> value, both uint8 N×C×H×W: a metric that metrics.extra adds to every evaluation.
    # None: computed by torch-fidelity or by the trial kind itself.
    compute: Callable[[torch.Tensor, torch.Tensor], float] | None = None


def metric(display: str, higher_is_better: bool, objective: bool = False) -> Callable[[Callable], Callable]:
    """Makes `compute(generated, real) -> float` a metric of one's own (uint8 N×C×H×W images, the first
    metrics.num_samples samples and the first metrics.num_real test images), named `package.module:function` in a
    study's metrics.extra (and objective, when `objective`)."""

    def mark(compute: Callable[[torch.Tensor, torch.Tensor], float]) -> Callable[[torch.Tensor, torch.Tensor], float]:
        compute.metric = Metric(compute.__name__, display, higher_is_better, objective, compute=compute)
        return compute

    return mark


def custom_metric(name: str, compute: Any) -> Metric:
    """A custom metric `package.module:function`, which METRICS.get imports: a function decorated with metric."""
    if not isinstance(getattr(compute, "metric", None), Metric):
        raise BenchError(f"custom metric {name!r}: decorate it with @bench.metrics.metric(...)")
    return dataclasses.replace(compute.metric, name=name)


METRICS: Registry[Metric] = Registry("metric", custom_metric, "package.module:function")


def _add(metric: Metric, description: str) -> None:
    METRICS.add(metric.name, metric, description)


# Of every trial, by torch-fidelity (KID, IS and precision / recall as MetricsConfig asks).
_add(Metric("fid", "FID", higher_is_better=False, objective=True), "Fréchet distance of the samples' features to the "
     "real images'")
_add(Metric("kid", "KID", higher_is_better=False), "kernel inception distance: unbiased MMD of the features, mean over "
     "subsets")
_add(Metric("isc", "IS", higher_is_better=True), "Inception score: how confidently and how variously the samples are "
     "classified")
_add(Metric("precision", "precision", higher_is_better=True), "prc: share of the samples near the real images' "
     "features; prf: share of the samples within delta of the polygon manifold")
_add(Metric("recall", "recall", higher_is_better=True), "prc: share of the real images near the samples' features; "
     "prf: share of the hold-out polygons the generator reaches within delta")
_add(Metric("f_score", "F-score", higher_is_better=True), "prc: harmonic mean of precision and recall")
# Of unconditional trials on the convex polygon sets, with metrics.prf (bench.polygon_metrics).
_add(Metric("f1", "F1", higher_is_better=True, objective=True, trial_kinds=("gan",)),
     "prf: harmonic mean of the polygon precision and recall (the paper's second experiment)")
# Of image-to-image trials, outputs against their true targets (bench.image_metrics).
_add(Metric("psnr", "PSNR (dB)", higher_is_better=True, objective=True, trial_kinds=("translation",)),
     "peak signal-to-noise ratio of the outputs")
_add(Metric("ssim", "SSIM", higher_is_better=True, objective=True, trial_kinds=("translation",)),
     "structural similarity of the outputs")
_add(Metric("perceptual", "perceptual distance", higher_is_better=False, trial_kinds=("translation",)),
     "mean squared difference of the outputs' and the targets' features on the fixed feature network")


def best_of(metric: str, values: list[float]) -> float:
    """The best finite value of `metric` among `values`; the worst possible (±inf) if none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    if METRICS.get(metric).higher_is_better:
        return max(finite, default=-math.inf)
    return min(finite, default=math.inf)
