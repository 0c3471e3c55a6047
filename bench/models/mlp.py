"""A small fully connected pair: fast on a CPU, good enough for digits and polygons.

G: FC 256 → BN → lrelu → FC 256 → BN → lrelu → FC c·h·w → sigmoid.
D: FC 256 → lrelu → FC 256 → [BN] → lrelu → FC 1.
BEGAN's autoencoder: FC 256 → lrelu → FC 32 (the code) → [BN] → lrelu → FC 256 → [BN] → lrelu → FC c·h·w → sigmoid,
   batch norm where v1's BEGAN autoencoder has it (gans/BEGAN.py 72-89): on the code and the decoder's hidden layer.
The VAE's encoder: D's body → FC 2·z_dim → (mu, sigma); its decoder is G.
[BN]: batch norm only when asked (the search's d_batchnorm). The model's own initialisation is PyTorch's defaults.
"""

from __future__ import annotations

import math

from torch import nn

from bench.models.common import Critic, GaussianEncoder, init_pytorch

HIDDEN = 256
CODE = 32

init_weights = init_pytorch


def check_shape(image_shape: tuple[int, int, int]) -> None:
    pass  # any shape works: images are flattened


def _bn(features: int, on: bool) -> nn.Module:
    return nn.BatchNorm1d(features) if on else nn.Identity()


def _body(image_shape: tuple[int, int, int], batchnorm: bool) -> list[nn.Module]:
    """D without its output layer: images to HIDDEN features."""
    return [
        nn.Flatten(),
        nn.Linear(math.prod(image_shape), HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        _bn(HIDDEN, batchnorm),
        nn.LeakyReLU(0.2),
    ]


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(z_dim, HIDDEN),
        nn.BatchNorm1d(HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        nn.BatchNorm1d(HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, math.prod(image_shape)),
        nn.Sigmoid(),
        nn.Unflatten(1, image_shape),
    )


def decoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    """The VAE's decoder: G as it is (v1's ReLU decoder belongs to the paper's pair, see infogan.decoder)."""
    return generator(image_shape, z_dim)


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    return Critic(*_body(image_shape, batchnorm), nn.Linear(HIDDEN, 1), nn.Flatten(0))  # (B, 1) → (B,) scores


def autoencoder(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    n = math.prod(image_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, CODE),
        _bn(CODE, batchnorm),
        nn.LeakyReLU(0.2),
        nn.Linear(CODE, HIDDEN),
        _bn(HIDDEN, batchnorm),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, n),
        nn.Sigmoid(),
        nn.Unflatten(1, image_shape),
    )


def encoder(image_shape: tuple[int, int, int], z_dim: int, batchnorm: bool) -> nn.Module:
    return GaussianEncoder(nn.Sequential(*_body(image_shape, batchnorm)), HIDDEN, z_dim)
