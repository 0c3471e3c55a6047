"""The DCGAN pair (Radford et al. 2016) for square images of side 4·2^k, base width 64.

G: FC to 4×4×(64·2^(k−1)) → BN → ReLU → k−1 × [deconv4×4 s2 halving the channels → BN → ReLU]
   → deconv4×4 s2 (c) → sigmoid.
D: conv4×4 s2 (64) → lrelu → k−1 × [conv4×4 s2 doubling the channels → [BN] → lrelu] → FC 1.
BEGAN's autoencoder: D's body → FC to a 64-d code → G's layers from the code, with [BN] in place of BN.
The VAE's encoder: D's body → FC 2·z_dim → (mu, sigma); its decoder is G.
[BN]: batch norm only when asked (the search's d_batchnorm). The model's own initialisation is Radford et al.'s:
weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0.
"""

from __future__ import annotations

from torch import nn

from bench import BenchError
from bench.models.common import Critic, GaussianEncoder

BASE = 64
CODE = 64  # BEGAN's code size, as in compare_gan v1 (gans/BEGAN.py line 72)


def _depth(image_shape: tuple[int, int, int]) -> int:
    """k, the number of stride-2 layers between 4×4 and the image: side = 4·2^k."""
    return image_shape[1].bit_length() - 3


def check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h != w or h < 8 or h & (h - 1):
        raise BenchError(f"model dcgan: images must be square with a side of 4·2^k (8, 16, 32, 64, ...), got {h}×{w}")


def init_weights(net: nn.Module) -> None:
    """Radford et al.'s initialisation, in place."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _bn(channels: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if on else nn.Identity()


def _conv_body(c: int, k: int, batchnorm: bool) -> nn.Sequential:
    """Images to 4×4 feature maps of BASE·2^(k−1) channels, flattened; never batch norm on the first layer."""
    layers: list[nn.Module] = [nn.Conv2d(c, BASE, 4, 2, 1), nn.LeakyReLU(0.2)]
    for i in range(1, k):
        channels = BASE * 2**i
        layers += [nn.Conv2d(channels // 2, channels, 4, 2, 1), _bn(channels, batchnorm), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Flatten())


def _deconv_decoder(c: int, k: int, features: int, batchnorm: bool) -> nn.Sequential:
    """G's layers from `features` inputs; G always has batch norm, BEGAN's decoder only when asked."""
    top = BASE * 2 ** (k - 1)
    layers: list[nn.Module] = [nn.Linear(features, top * 4 * 4), nn.Unflatten(1, (top, 4, 4)), _bn(top, batchnorm),
                               nn.ReLU()]
    for i in range(k - 1, 0, -1):
        channels = BASE * 2 ** (i - 1)
        layers += [nn.ConvTranspose2d(channels * 2, channels, 4, 2, 1), _bn(channels, batchnorm), nn.ReLU()]
    return nn.Sequential(*layers, nn.ConvTranspose2d(BASE, c, 4, 2, 1), nn.Sigmoid())


def _features(k: int) -> int:
    return BASE * 2 ** (k - 1) * 4 * 4


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return _deconv_decoder(image_shape[0], _depth(image_shape), z_dim, batchnorm=True)


def decoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    """The VAE's decoder: G, which already uses ReLU like v1's VAE decoder."""
    return generator(image_shape, z_dim)


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    k = _depth(image_shape)
    return Critic(_conv_body(image_shape[0], k, batchnorm), nn.Linear(_features(k), 1),
                  nn.Flatten(0))  # (B, 1) → (B,) scores


def autoencoder(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    c, k = image_shape[0], _depth(image_shape)
    return nn.Sequential(_conv_body(c, k, batchnorm), nn.Linear(_features(k), CODE),
                         _deconv_decoder(c, k, CODE, batchnorm))


def encoder(image_shape: tuple[int, int, int], z_dim: int, batchnorm: bool) -> nn.Module:
    k = _depth(image_shape)
    return GaussianEncoder(_conv_body(image_shape[0], k, batchnorm), _features(k), z_dim)
