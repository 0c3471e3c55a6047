"""The paper's InfoGAN-style pair (Lucic et al. 2018, one architecture for every dataset).

D: conv4×4 s2 (64) → lrelu → conv4×4 s2 (128) → [BN] → lrelu → FC 1024 → [BN] → lrelu → FC 1.
G: FC 1024 → BN → lrelu → FC 128·(h/4)·(w/4) → BN → lrelu → deconv4×4 s2 (64) → BN → lrelu
   → deconv4×4 s2 (c) → sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from bench import BenchError
from bench.models.common import GaussianEncoder


def check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h % 4 or w % 4:
        raise BenchError(f"model infogan: image height and width must be multiples of 4, got {h}×{w}")


def _conv_encoder(c: int, batchnorm: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1),
        nn.BatchNorm2d(128) if batchnorm else nn.Identity(),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
    )


def _deconv_decoder(c: int, h: int, w: int, z_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(z_dim, 1024),
        nn.BatchNorm1d(1024),
        nn.LeakyReLU(0.2),
        nn.Linear(1024, 128 * (h // 4) * (w // 4)),
        nn.BatchNorm1d(128 * (h // 4) * (w // 4)),
        nn.LeakyReLU(0.2),
        nn.Unflatten(1, (128, h // 4, w // 4)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(64, c, 4, 2, 1),
        nn.Sigmoid(),
    )


def _body(image_shape: tuple[int, int, int], batchnorm: bool) -> list[nn.Module]:
    """D without its output layer: images to 1024 features."""
    c, h, w = image_shape
    return [
        _conv_encoder(c, batchnorm),
        nn.Linear(128 * (h // 4) * (w // 4), 1024),
        nn.BatchNorm1d(1024) if batchnorm else nn.Identity(),
        nn.LeakyReLU(0.2),
    ]


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], batchnorm: bool):
        super().__init__()
        self.net = nn.Sequential(*_body(image_shape, batchnorm), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class AutoEncoder(nn.Module):
    """BEGAN's discriminator at the size of the InfoGAN pair: the same encoder, a 64-d code, G's decoder."""

    def __init__(self, image_shape: tuple[int, int, int], code: int = 64):
        super().__init__()
        c, h, w = image_shape
        self.encoder = nn.Sequential(_conv_encoder(c, batchnorm=False), nn.Linear(128 * (h // 4) * (w // 4), code))
        self.decoder = _deconv_decoder(c, h, w, code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    c, h, w = image_shape
    return _deconv_decoder(c, h, w, z_dim)


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    return Discriminator(image_shape, batchnorm)


def autoencoder(image_shape: tuple[int, int, int]) -> nn.Module:
    return AutoEncoder(image_shape)


def encoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return GaussianEncoder(nn.Sequential(*_body(image_shape, batchnorm=False)), 1024, z_dim)
