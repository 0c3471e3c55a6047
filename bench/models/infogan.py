"""The paper's InfoGAN-style pair (Lucic et al. 2018, one architecture for every dataset), with BEGAN's
autoencoder and the VAE's encoder and decoder, layer for layer as google/compare_gan v1 builds them.

D (gans/abstract_gan.py 67-95): conv4×4 s2 (64) → lrelu → conv4×4 s2 (128) → [BN] → lrelu → FC 1024 → [BN] → lrelu
   → FC 1.
G (abstract_gan.py 97-116): FC 1024 → BN → lrelu → FC 128·(h/4)·(w/4) → BN → lrelu → deconv4×4 s2 (64) → BN → lrelu
   → deconv4×4 s2 (c) → sigmoid.
BEGAN's autoencoder (gans/BEGAN.py 46-96): conv4×4 s2 (64) → lrelu → conv4×4 s2 (128), no activation → FC 64 → [BN]
   → lrelu → FC 128·(h/4)·(w/4) → [BN] → lrelu → deconv4×4 s2 (64) → [BN] → lrelu → deconv4×4 s2 (c) → sigmoid.
The VAE's encoder (gans/VAE.py 39-57): D's body → FC 2·z_dim → (mu, sigma); its decoder (VAE.py 59-76): G with ReLU
   in place of leaky ReLU.
[BN]: batch norm only when asked (the search's d_batchnorm). TF's "SAME" padding of a 4×4 stride-2 (transposed)
convolution on an even side is PyTorch's padding 1. The model's own initialisation is v1's (gans/ops.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from bench import BenchError
from bench.models.common import Critic, GaussianEncoder, init_compare_gan

init_weights = init_compare_gan

_Activation = Callable[[], nn.Module]
_LRELU: _Activation = partial(nn.LeakyReLU, 0.2)  # v1's lrelu leaks 0.2 (ops.py line 38)


def check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h % 4 or w % 4:
        raise BenchError(f"model infogan: image height and width must be multiples of 4, got {h}×{w}")


def _bn(cls: type[nn.Module], features: int, on: bool) -> list[nn.Module]:
    """A batch-norm layer where v1 has `if self.discriminator_batchnorm: batch_norm(...)`, else nothing."""
    return [cls(features)] if on else []


def _body(image_shape: tuple[int, int, int], batchnorm: bool) -> list[nn.Module]:
    """D without its output layer, images to 1024 features (abstract_gan.py 82-92; VAE.py 43-52)."""
    c, h, w = image_shape
    return [
        nn.Conv2d(c, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1),
        *_bn(nn.BatchNorm2d, 128, batchnorm),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128 * (h // 4) * (w // 4), 1024),
        *_bn(nn.BatchNorm1d, 1024, batchnorm),
        nn.LeakyReLU(0.2),
    ]


def _upsample(image_shape: tuple[int, int, int], features: int, batchnorm: bool,
              activation: _Activation) -> list[nn.Module]:
    """The last three layers of G, BEGAN's decoder and the VAE's decoder: `features` to images in [0, 1]."""
    c, h, w = image_shape
    return [
        nn.Linear(features, 128 * (h // 4) * (w // 4)),
        *_bn(nn.BatchNorm1d, 128 * (h // 4) * (w // 4), batchnorm),
        activation(),
        nn.Unflatten(1, (128, h // 4, w // 4)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1),
        *_bn(nn.BatchNorm2d, 64, batchnorm),
        activation(),
        nn.ConvTranspose2d(64, c, 4, 2, 1),
        nn.Sigmoid(),
    ]


def _generator(image_shape: tuple[int, int, int], z_dim: int, activation: _Activation) -> nn.Module:
    return nn.Sequential(nn.Linear(z_dim, 1024), nn.BatchNorm1d(1024), activation(),
                         *_upsample(image_shape, 1024, batchnorm=True, activation=activation))


def generator(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    return _generator(image_shape, z_dim, _LRELU)


def decoder(image_shape: tuple[int, int, int], z_dim: int) -> nn.Module:
    """The VAE's decoder: G's layers with ReLU, as v1's Bernoulli decoder has them (VAE.py 65-75)."""
    return _generator(image_shape, z_dim, nn.ReLU)


def discriminator(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    return Critic(*_body(image_shape, batchnorm), nn.Linear(1024, 1), nn.Flatten(0))  # (B, 1) → (B,) scores


def autoencoder(image_shape: tuple[int, int, int], batchnorm: bool) -> nn.Module:
    """BEGAN's discriminator (BEGAN.py 68-92): v1 leaves the second convolution without batch norm or activation."""
    c, h, w = image_shape
    return nn.Sequential(
        nn.Conv2d(c, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1),
        nn.Flatten(),
        nn.Linear(128 * (h // 4) * (w // 4), 64),  # the 64-d code
        *_bn(nn.BatchNorm1d, 64, batchnorm),
        nn.LeakyReLU(0.2),
        *_upsample(image_shape, 64, batchnorm, _LRELU),
    )


def encoder(image_shape: tuple[int, int, int], z_dim: int, batchnorm: bool) -> nn.Module:
    return GaussianEncoder(nn.Sequential(*_body(image_shape, batchnorm)), 1024, z_dim)
