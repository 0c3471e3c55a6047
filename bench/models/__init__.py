"""Generator/discriminator pairs, selected by name.

Every model module defines
- `check_shape(image_shape)`: a one-line BenchError for shapes it cannot take;
- `generator(image_shape, z_dim)`: latents to images in [0, 1] (every generator ends in a sigmoid);
- `discriminator(image_shape, batchnorm)`: images to raw scores of shape (B,), a `Critic` (its
  `scores_and_features(x)` also returns the penultimate features, from the same forward pass);
- `autoencoder(image_shape, batchnorm)`: BEGAN's discriminator, images to reconstructions in [0, 1];
- `encoder(image_shape, z_dim, batchnorm)`: the VAE's, D's body then a linear layer, images to (mu, sigma) of shape
  (B, z_dim) each, sigma = 1e-6 + softplus(·) > 0 as in compare_gan v1 (gans/VAE.py line 56);
- `decoder(image_shape, z_dim)`: the VAE's generator;
- `init_weights(net)`: the model's own initialisation, in place.
`batchnorm` is the search's d_batchnorm: batch norm in D's hidden layers (and in the autoencoder's, where v1's BEGAN
has it) or none. The functions return layers as PyTorch constructs them; `build` then applies the initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Literal, get_args

from torch import nn

from bench import BenchError
from bench.models import dcgan, infogan, mlp
from bench.models.common import init_compare_gan, init_pytorch
from bench.registry import Registry

MODELS: Registry[ModuleType] = Registry("model")
MODELS.add("mlp", mlp, "a small fully connected pair: fast on a CPU, good enough for digits and polygons")
MODELS.add("infogan", infogan, "the paper's InfoGAN-style pair, layer for layer as compare_gan v1 builds it")
MODELS.add("dcgan", dcgan, "the DCGAN pair (Radford et al. 2016) for square images of side 4·2^k")

# What sits in D's place: a critic scoring images, BEGAN's autoencoder, the VAE's encoder, or nothing (an
# image-to-image loss of terms alone, such as L1 regression).
DiscriminatorKind = Literal["critic", "autoencoder", "encoder", "none"]

# "model": each model's own (infogan: compare_gan's, the paper's; dcgan: Radford et al.'s; mlp: PyTorch's);
# "compare_gan": compare_gan v1's for any model (gans/ops.py); "pytorch": PyTorch's layer defaults.
Init = Literal["model", "compare_gan", "pytorch"]
INITS: tuple[str, ...] = get_args(Init)
_INITIALISERS: dict[str, Callable[[nn.Module], None]] = {"compare_gan": init_compare_gan, "pytorch": init_pytorch}


def build(
    name: str,
    image_shape: tuple[int, int, int],
    z_dim: int,
    discriminator: DiscriminatorKind = "critic",
    d_batchnorm: bool = True,
    init: Init = "model",
) -> tuple[nn.Module, nn.Module]:
    """Returns (generator, discriminator): for discriminator="encoder", the VAE's (decoder, encoder).

    `d_batchnorm` applies to whichever network sits in D's place. The weights are drawn from torch's global
    generator after construction, so torch.manual_seed fixes every one of them.
    """
    module = MODELS.get(name)
    if init not in INITS:
        raise BenchError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    module.check_shape(image_shape)
    initialise = module.init_weights if init == "model" else _INITIALISERS[init]
    # G is initialised before D is constructed, so the global generator's draws come in the order they always did.
    G = module.decoder(image_shape, z_dim) if discriminator == "encoder" else module.generator(image_shape, z_dim)
    initialise(G)
    if discriminator == "autoencoder":
        D = module.autoencoder(image_shape, d_batchnorm)
    elif discriminator == "encoder":
        D = module.encoder(image_shape, z_dim, d_batchnorm)
    else:
        D = module.discriminator(image_shape, d_batchnorm)
    initialise(D)
    return G, D
