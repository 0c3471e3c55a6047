"""The DCGAN pair (Radford et al. 2016) for square images of side 4·2^k, base width 64.

G: FC to 4×4×(64·2^(k−1)) → BN → ReLU → k−1 × [deconv4×4 s2 halving the channels → BN → ReLU]
   → deconv4×4 s2 (c) → sigmoid.
D: conv4×4 s2 (64) → lrelu → k−1 × [conv4×4 s2 doubling the channels → [BN] → lrelu] → FC 1.
Weights are drawn as Radford et al. do: N(0, 0.02), batch-norm scales N(1, 0.02), biases 0.
"""

from __future__ import annotations

import torch
from torch import nn

from bench import BenchError
from bench.models.common import GaussianEncoder

BASE = 64


def _depth(image_shape: tuple[int, int, int]) -> int:
    """k, the number of stride-2 layers between 4×4 and the image: side = 4·2^k."""
    return image_shape[1].bit_length() - 3


def check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h != w or h < 8 or h & (h - 1):
        raise BenchError(f"model dcgan: images must be square with a side of 4·2^k (8, 16, 32, 64, ...), got {h}×{w}")


def _init(module: nn.Module) -> nn.Module:
    # Drawn from the global generator after construction, so torch.manual_seed still fixes every weight.
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _conv_body(c: int, k: int, batchnorm: bool) -> nn.Sequential:
    """Images to 4×4 feature maps of BASE·2^(k−1) channels, flattened; never batch norm on the first layer."""
    layers: list[nn.Module] = [nn.Conv2d(c, BASE, 4, 2, 1), nn.LeakyReLU(0.2)]
    for i in range(1, k):
        channels = BASE * 2**i
        layers += [nn.Conv2d(channels // 2, channels, 4, 2, 1),
                   nn.BatchNorm2d(channels) if batchnorm else nn.Identity(), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Flatten())


def _deconv_decoder(c: int, k: int, z_dim: int) -> nn.Sequential:
    top = BASE * 2 ** (k - 1)
    layers: list[nn.Module] = [nn.Linear(z_dim, top * 4 * 4), nn.Unflatten(1, (top, 4, 4)), nn.BatchNorm2d(top),
                               nn.ReLU()]
    for i in range(k - 1, 0, -1):
        channels = BASE * 2 ** (i - 1)
        layers += [nn.ConvTranspose2d(channels * 2, channels, 4, 2, 1), nn.BatchNorm2d(channels), nn.ReLU()]
    return nn.Sequential(*layers, nn.ConvTranspose2d(BASE, c, 4, 2, 1), nn.Sigmoid())


def _features(k: int) -> int:
    return BASE * 2 ** (k - 1) * 4 * 4


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], batchnorm: bool):
        super().__init__()
        k = _depth(image_shape)
        self.net = nn.Sequential(_conv_body(image_shape[0], k, batchnorm), nn.Linear(_features(k), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class AutoEncoder(nn.Module):
    """BEGAN's discriminator at the size of the DCGAN pair: D's body, a 64-d code, G's decoder."""

    def __init__(self, image_shape: tuple[int, int, int], code: int = 64):
        super().__init__()
        c, k = image_shape[0], _depth(image_shape)
        self.encoder = nn.Sequential(_conv_body(c, k, batchnorm=False), nn.Linear(_features(k), code))
        self.decoder = _deconv_decoder(c, k, code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return _init(_deconv_decoder(image_shape[0], _depth(image_shape), z_dim))


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    return _init(Discriminator(image_shape, batchnorm))


def autoencoder(image_shape: tuple[int, int, int]) -> nn.Module:
    return _init(AutoEncoder(image_shape))


def encoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    k = _depth(image_shape)
    return _init(GaussianEncoder(_conv_body(image_shape[0], k, batchnorm=False), _features(k), z_dim))
