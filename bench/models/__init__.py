"""Generator/discriminator pairs, selected by name.

Every model module defines `generator(image_shape, z_dim)`, `discriminator(image_shape, batchnorm)`
(raw scores of shape (B,)) and `autoencoder(image_shape)` (BEGAN's discriminator: images in,
reconstructions in [0, 1] out). Generators end in a sigmoid, so pixels are in [0, 1].
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from bench import BenchError
from bench.models import infogan, mlp

MODELS: dict[str, ModuleType] = {"mlp": mlp, "infogan": infogan}


def names() -> list[str]:
    return list(MODELS)


def build(
    name: str,
    image_shape: tuple[int, int, int],
    z_dim: int,
    autoencoder_d: bool = False,
    d_batchnorm: bool = True,
) -> tuple[nn.Module, nn.Module]:
    """Returns (generator, discriminator); the discriminator is an autoencoder for BEGAN."""
    if name not in MODELS:
        raise BenchError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    module = MODELS[name]
    module.check_shape(image_shape)
    generator = module.generator(image_shape, z_dim)
    discriminator = module.autoencoder(image_shape) if autoencoder_d else module.discriminator(image_shape, d_batchnorm)
    return generator, discriminator
