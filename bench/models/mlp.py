"""A small fully connected pair: fast on a CPU, good enough for digits and polygons."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.models.common import GaussianEncoder

HIDDEN = 256


def check_shape(image_shape: tuple[int, int, int]) -> None:
    pass  # any shape works: images are flattened


class Generator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], z_dim: int):
        super().__init__()
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Linear(z_dim, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
            nn.LeakyReLU(0.2),
            nn.Linear(HIDDEN, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
            nn.LeakyReLU(0.2),
            nn.Linear(HIDDEN, math.prod(image_shape)),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


def _body(image_shape: tuple[int, int, int], batchnorm: bool) -> list[nn.Module]:
    """D without its output layer: images to HIDDEN features."""
    return [
        nn.Flatten(),
        nn.Linear(math.prod(image_shape), HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        nn.BatchNorm1d(HIDDEN) if batchnorm else nn.Identity(),
        nn.LeakyReLU(0.2),
    ]


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], batchnorm: bool):
        super().__init__()
        self.net = nn.Sequential(*_body(image_shape, batchnorm), nn.Linear(HIDDEN, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class AutoEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], code: int = 32):
        super().__init__()
        self.image_shape = image_shape
        n = math.prod(image_shape)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n, HIDDEN),
            nn.LeakyReLU(0.2),
            nn.Linear(HIDDEN, code),
            nn.LeakyReLU(0.2),
            nn.Linear(code, HIDDEN),
            nn.LeakyReLU(0.2),
            nn.Linear(HIDDEN, n),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1, *self.image_shape)


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return Generator(image_shape, z_dim)


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    return Discriminator(image_shape, batchnorm)


def autoencoder(image_shape: tuple[int, int, int]) -> nn.Module:
    return AutoEncoder(image_shape)


def encoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return GaussianEncoder(nn.Sequential(*_body(image_shape, batchnorm=False)), HIDDEN, z_dim)
