"""Precision / recall / F1 scoring time on convex polygons: the fit of 1,000 samples to the polygon manifold, and 200
inversions of an untrained generator (the paper's InfoGAN pair at 28×28 and the MLP pair), at the default protocol
(bench.polygon_metrics.PrfProtocol).

Run from the repository root:

    PYTHONPATH=. python benchmarks/polygon_scoring.py [--threads 2]

The samples are the data's own triangles, half of them blurred (σ = 1 px) and a tenth replaced by noise, so the fit
meets the cases a generator's samples show. Target (issue 21): 1,000 samples and 200 inversions in under a minute on
this 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from bench import models
from bench import polygon_metrics as pm
from bench.data import convex


def samples(count: int) -> np.ndarray:
    images = convex.render(convex.draw(count, 3, np.random.RandomState(0)).vertices())
    images[: count // 2] = np.stack([gaussian_filter(image, 1.0) for image in images[: count // 2]])
    images[-count // 10:] = np.random.RandomState(1).rand(count // 10, 28, 28)
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = pm.PrfProtocol()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, {args.threads} threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; protocol {protocol}")
    images = samples(protocol.samples)
    start = time.perf_counter()
    precision, _ = pm.precision(images, 3, protocol.delta)
    fit_seconds = time.perf_counter() - start
    print(f"fit of {protocol.samples} samples: {fit_seconds:.1f} s (precision {precision:.3f}: 45 % blurred, "
          "10 % noise)")
    targets = torch.from_numpy(convex.render(convex.draw(protocol.inversions, 3, np.random.RandomState(2))
                                             .vertices()))[:, None]
    for name in ("mlp", "infogan"):
        torch.manual_seed(0)
        G, _ = models.build(name, (1, 28, 28), 64, "critic", False)
        G.eval().requires_grad_(False)
        latents = torch.rand(protocol.inversions * protocol.restarts, 64,
                             generator=torch.Generator().manual_seed(protocol.seed)) * 2 - 1
        start = time.perf_counter()
        pm.invert(G, latents, targets, protocol.steps, protocol.lr, (-1.0, 1.0))
        seconds = time.perf_counter() - start
        print(f"{protocol.inversions} inversions × {protocol.restarts} restarts × {protocol.steps} steps, {name}: "
              f"{seconds:.1f} s; with the fit {fit_seconds + seconds:.1f} s (target < 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
