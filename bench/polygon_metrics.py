"""Precision, recall and F1 on convex polygons (Lucic et al. 2018, section 5). The data manifold is known, so whether a
sample is a polygon (precision) and whether the generator can make each held-out polygon (recall) can be measured,
which FID cannot tell apart (a sharp but narrow model against a blurry but complete one).

The paper gives the idea, not the code (neither its data nor its evaluation was published: google/compare_gan issue
25). The choices made here, each part of the protocol recorded with every score (`PrfProtocol`):
- images are [0, 1] with the data's convention, white (1) background and black (0) shape; the distance between two
  images is the RMS of their pixel differences;
- the manifold: the convex polygons with the data set's vertex count, rendered by the data's own renderer
  (bench.data.convex.render). An image's distance to it is its distance to its fitted polygon: the convex hull of its
  dark pixels (< ½), cut to k vertices by dropping, one at a time, the vertex whose removal changes the area least,
  then refined by a pattern search on the vertices' coordinates (steps of 1 px halved down to 1/16 px) that keeps every move
  lowering the distance. On polygons of the data with known vertices, the fit's distance is within FIT_SLACK of 0
  (tests/test_polygon_metrics.py measures it);
- precision: the share of samples within `delta` of the manifold;
- recall: the share of hold-out polygons within `delta` of the generator's range, found by inverting G: Adam on z from
  `restarts` starting latents per target, all at once, for `steps` steps (z kept in the prior's support), the best
  restart counting;
- F1: their harmonic mean (0 when both are 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError
from torch import Tensor

from bench.data.convex import render

# The pattern search's steps, in pixels: coarse to fine.
SEARCH_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625)
SEARCH_ROUNDS = 2  # passes over every coordinate at each step
# How far above 0 the fit's distance may stay on the data's own polygons: measured on 300 triangles and 300
# quadrilaterals, mean 0.006–0.008 and at most 0.042 (a pattern search can stop in a local minimum).
FIT_SLACK = 0.05


@dataclass(frozen=True)
class PrfProtocol:
    """How precision, recall and F1 were measured; only scores of equal protocols compare."""

    delta: float = 0.1  # RMS distance in [0, 1] pixels within which an image counts as on the manifold / reached
    samples: int = 1000  # generated samples whose precision is measured
    inversions: int = 200  # hold-out polygons G is inverted on (the first ones, in order)
    restarts: int = 4  # starting latents per hold-out polygon
    steps: int = 100  # Adam steps of each inversion
    lr: float = 0.05  # Adam's learning rate on z
    seed: int = 2020  # of the starting latents
    distance: str = "rms"
    fit: str = "hull, area-cut to k, pattern search 1 px to 1/16 px"

    def record(self) -> dict[str, Any]:
        return {f"prf_{k}": v for k, v in asdict(self).items()}


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS pixel difference of each pair of images (N, H, W) in [0, 1]."""
    return np.sqrt(np.square(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).mean(axis=1))


def _cut_to(points: np.ndarray, k: int) -> np.ndarray:
    """A convex polygon's vertices (in order) cut to k, dropping each time the vertex whose triangle with its neighbours
    is smallest (the least area lost)."""
    points = np.asarray(points)
    while len(points) > k:
        before, after = np.roll(points, 1, axis=0) - points, np.roll(points, -1, axis=0) - points
        areas = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0])  # twice each vertex's triangle
        points = np.delete(points, int(np.argmin(areas)), axis=0)
    return points


def _initial(image: np.ndarray, k: int) -> np.ndarray:
    """k vertices from the convex hull of the image's dark pixels; a tiny k-gon at the centre when there is no hull
    (fewer than three dark pixels, or all on a line)."""
    size = image.shape[-1]
    dark = np.argwhere(image < 0.5).astype(np.float64)
    if len(dark) >= 3:
        try:
            hull = ConvexHull(dark)
            ring = dark[hull.vertices]
            if len(ring) >= k:
                return _cut_to(ring, k)
        except QhullError:
            pass
    centre = dark.mean(axis=0) if len(dark) else np.full(2, (size - 1) / 2)
    angles = 2 * np.pi * np.arange(k) / k
    return centre + 0.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def fit(images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, k, 2), distances (N,)): each image's fitted k-gon (see the module's docstring) and its distance
    to it."""
    vertices = np.stack([_initial(image, k) for image in images])
    best = distances(images, render(vertices, size=images.shape[-1]))
    for step in SEARCH_STEPS:
        for _ in range(SEARCH_ROUNDS):
            for vertex in range(k):
                for axis in range(2):
                    for sign in (1.0, -1.0):
                        moved = vertices.copy()
                        moved[:, vertex, axis] += sign * step
                        trial = distances(images, render(moved, size=images.shape[-1]))
                        better = trial < best
                        vertices[better], best[better] = moved[better], trial[better]
    return vertices, best


def precision(images: np.ndarray, k: int, delta: float) -> tuple[float, np.ndarray]:
    """(share of images within delta of the k-gons, each image's distance to them)."""
    _, distance = fit(images, k)
    return float((distance <= delta).mean()), distance


def invert(generate: Callable[[Tensor], Tensor], start: Tensor, targets: Tensor, steps: int, lr: float,
           bounds: tuple[float, float] | None) -> Tensor:
    """Each target's (M, C, H, W) distance to G's range: Adam on z from `start` (M·R latents, R per target, target by
    target), minimising the mean squared pixel difference, z clamped to `bounds` (the prior's support) after each
    step; the best of a target's R restarts. `generate` is G in eval mode; its weights are not changed."""
    restarts = len(start) // len(targets)
    z = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    goal = targets.repeat_interleave(restarts, dim=0)
    for _ in range(steps):
        loss = (generate(z).float() - goal).square().flatten(1).mean(1).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if bounds is not None:
            with torch.no_grad():
                z.clamp_(*bounds)
    with torch.no_grad():
        rms = (generate(z).float() - goal).square().flatten(1).mean(1).sqrt()
    return rms.view(len(targets), restarts).min(dim=1).values


def f1(precision_value: float, recall_value: float) -> float:
    total = precision_value + recall_value
    return 2 * precision_value * recall_value / total if total > 0 else 0.0


def scores(samples: np.ndarray, k: int, reach: Tensor, protocol: PrfProtocol) -> dict[str, float]:
    """The row's precision, recall and F1 from the samples (N, H, W) in [0, 1] and the hold-out polygons' distances to
    G's range (invert)."""
    p, _ = precision(samples, k, protocol.delta)
    r = float((reach <= protocol.delta).float().mean())
    return {"precision": p, "recall": r, "f1": f1(p, r)}

