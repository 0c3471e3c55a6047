"""Generator/discriminator pairs, selected by name.

Every model module defines `check_shape(image_shape)` (a one-line BenchError for shapes it cannot
take), `generator(image_shape, z_dim)`, `discriminator(image_shape, batchnorm)` (raw scores of shape
(B,)), `autoencoder(image_shape)` (BEGAN's discriminator: images in, reconstructions in [0, 1] out)
and `encoder(image_shape, z_dim)` (the VAE's: images in, (mu, logvar) of shape (B, z_dim) each out,
the discriminator's body without batch norm). Generators end in a sigmoid, so pixels are in [0, 1].
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

from torch import nn

from bench import BenchError
from bench.models import dcgan, infogan, mlp

MODELS: dict[str, ModuleType] = {"mlp": mlp, "infogan": infogan, "dcgan": dcgan}

# What sits in D's place: a critic scoring images, BEGAN's autoencoder, or the VAE's encoder.
DiscriminatorKind = Literal["critic", "autoencoder", "encoder"]


def names() -> list[str]:
    return list(MODELS)


def build(
    name: str,
    image_shape: tuple[int, int, int],
    z_dim: int,
    discriminator: DiscriminatorKind = "critic",
    d_batchnorm: bool = True,
) -> tuple[nn.Module, nn.Module]:
    """Returns (generator, discriminator); `d_batchnorm` only applies to a critic."""
    if name not in MODELS:
        raise BenchError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    module = MODELS[name]
    module.check_shape(image_shape)
    generator = module.generator(image_shape, z_dim)
    if discriminator == "autoencoder":
        return generator, module.autoencoder(image_shape)
    if discriminator == "encoder":
        return generator, module.encoder(image_shape, z_dim)
    return generator, module.discriminator(image_shape, d_batchnorm)
