"""The GAN losses under comparison, and a registry of them with the authors' default hyperparameters.

Every loss maps the discriminator's raw scores (logits, no sigmoid) on a real and a fake batch to
(d_loss, g_loss), each averaged over the batch. Working on logits lets the sigmoid cross-entropy
terms use softplus, which stays finite where log(sigmoid(t)) would underflow:
    -log sigmoid(t) = softplus(-t)        -log(1 - sigmoid(t)) = softplus(t)

The caller decides what is detached: D's loss is normally computed on D(G(z).detach()), G's on D(G(z)).
BEGAN's discriminator is an autoencoder, so it does not fit this signature and has its own functions;
so does the paper's VAE baseline, whose "discriminator" is its encoder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from bench import BenchError
from bench.models import DiscriminatorKind

LossFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class UnknownLossError(BenchError):
    """The loss name is neither registered nor an importable package.module:function."""


def mm_gan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Minimax GAN (Goodfellow et al. 2014): G minimises E log(1 - D(G(z))) exactly as in the game."""
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    g_loss = -F.softplus(fake).mean()
    return d_loss, g_loss


def ns_gan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Non-saturating GAN: G maximises E log D(G(z)) instead, which keeps its gradient alive early on."""
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    g_loss = F.softplus(-fake).mean()
    return d_loss, g_loss


def lsgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares GAN (Mao et al. 2017) with targets 1 for real and 0 for fake.

    Deliberately applied to the raw score, as Mao et al. define it. The authors' code applied it to
    sigmoid(score), which bounds the loss and saturates its gradient; results differ from theirs here.
    """
    d_loss = 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()
    g_loss = 0.5 * (fake - 1).square().mean()
    return d_loss, g_loss


def wgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Wasserstein GAN: D is a critic whose score gap estimates the Earth mover's distance.

    Only meaningful with a Lipschitz constraint on D: weight clipping (WGAN) or a gradient penalty (WGAN-GP).
    """
    d_loss = fake.mean() - real.mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


def hinge(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D stops being pushed once a score clears its margin of 1."""
    d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


def reconstruction_error(x: Tensor, reconstruction: Tensor) -> Tensor:
    """BEGAN's L(x): the autoencoder's mean absolute reconstruction error, a scalar."""
    return (x - reconstruction).abs().mean()


def began_losses(real_error: Tensor, fake_error: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """BEGAN (Berthelot et al. 2017) from the reconstruction errors L(x) and L(G(z)).

    D reconstructs real images well and fakes badly, weighted by k; G makes its samples easy to reconstruct.
    """
    d_loss = real_error - k * fake_error
    g_loss = fake_error
    return d_loss, g_loss


def began_update_k(k: float, real_error: float, fake_error: float, gamma: float, lambda_k: float) -> float:
    """One step of BEGAN's proportional control, keeping E L(G(z)) = gamma * E L(x); k stays in [0, 1]."""
    k = k + lambda_k * (gamma * real_error - fake_error)
    return min(max(k, 0.0), 1.0)


def began_convergence(real_error: float, fake_error: float, gamma: float) -> float:
    """BEGAN's global convergence measure M = L(x) + |gamma * L(x) - L(G(z))|; lower is better."""
    return real_error + abs(gamma * real_error - fake_error)


def vae_loss(x: Tensor, reconstruction: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE's negative ELBO (Kingma & Welling 2014) as (reconstruction term, KL term), each a batch mean.

    The decoder's pixels are Bernoulli probabilities, so the reconstruction term is the binary cross-entropy
    summed over pixels; the KL of q(z|x) = N(mu, diag(exp(logvar))) from the prior N(0, I) is summed over
    latent dimensions. The loss to minimise is their sum. F.binary_cross_entropy clamps its logarithms at
    -100, so a saturated sigmoid pixel gives a large but finite term rather than inf. It raises on NaN pixels,
    though, and a decoder that blew up must count as a diverged run: then the term is NaN (with a graph).
    """
    kl_term = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1).mean()
    if not torch.isfinite(reconstruction).all():
        return reconstruction.sum() * float("nan"), kl_term
    reconstruction_term = F.binary_cross_entropy(reconstruction, x, reduction="none").flatten(1).sum(1).mean()
    return reconstruction_term, kl_term


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: LossFn | None  # None exactly when D is not a critic: began and vae have their own functions
    description: str  # one line, shown by `gan-bench losses`
    penalty: str | None = None  # name of a penalty in bench.penalties, added to D's loss weighted by gp_lambda
    weight_clip: bool = False  # WGAN: clip D's weights to [-clip, clip] after each D step
    discriminator: DiscriminatorKind = "critic"  # what D is: a critic of raw scores, BEGAN's autoencoder, an encoder
    latent: Literal["uniform", "normal"] | None = None  # a latent distribution the loss requires, overriding z_dist
    defaults: Mapping[str, float | int] = field(default_factory=dict)  # the authors' default hyperparameters


def _defaults(**values: float | int) -> Mapping[str, float | int]:
    # Read-only: a caller overriding one run's settings must not change the registry for the next run.
    return MappingProxyType(values)


_ADAM = dict(lr=2e-4, beta1=0.5, beta2=0.999, n_disc=1)

LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("mm_gan", mm_gan, "minimax GAN: G minimises log(1 - D(G(z)))", defaults=_defaults(**_ADAM)),
        LossSpec("ns_gan", ns_gan, "non-saturating GAN: G maximises log D(G(z))", defaults=_defaults(**_ADAM)),
        LossSpec("lsgan", lsgan, "least squares on D's raw score, targets 1 and 0", defaults=_defaults(**_ADAM)),
        LossSpec(
            "wgan",
            wgan,
            "Wasserstein GAN with weight clipping",
            weight_clip=True,
            defaults=_defaults(lr=5e-5, beta1=0.5, beta2=0.999, n_disc=5, clip=0.01),
        ),
        LossSpec(
            "wgan_gp",
            wgan,
            "Wasserstein GAN with a gradient penalty on real-fake interpolates",
            penalty="wgan_gp",
            defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.9, n_disc=5, gp_lambda=10),
        ),
        LossSpec(
            "dragan",
            ns_gan,
            "non-saturating GAN with a gradient penalty around the real data",
            penalty="dragan",
            defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999, n_disc=1, gp_lambda=10),
        ),
        LossSpec("hinge", hinge, "hinge loss with margin 1", defaults=_defaults(**_ADAM)),
        LossSpec(
            "began",
            None,
            "boundary equilibrium GAN: autoencoder D balanced by a control variable k",
            discriminator="autoencoder",
            defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999, n_disc=1, began_gamma=0.5, began_lambda_k=1e-3),
        ),
        # The paper's non-adversarial baseline, listed as a loss so it sits in the same tables. One step is one
        # Adam update of encoder and decoder together, so n_disc, d_batchnorm, the penalties and r1_gamma do not
        # apply; the encoder's KL term is reported as d_loss and the decoder's reconstruction term as g_loss.
        LossSpec(
            "vae",
            None,
            "VAE baseline: Gaussian encoder as D, Bernoulli decoder as G; d_loss = KL, g_loss = reconstruction BCE",
            discriminator="encoder",
            latent="normal",  # the prior: decoding z ~ N(0, I) is how a VAE samples
            defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999),
        ),
    ]
}


def names() -> list[str]:
    """The registered loss names, in listing order."""
    return list(LOSSES)


def get(name: str) -> LossSpec:
    """The registered loss `name`, or a custom loss given as `package.module:function`.

    A custom name imports that module and will run that function during training, so only pass code
    you trust. The function must map (real, fake) raw scores to (d_loss, g_loss) like the built-ins.
    """
    if name in LOSSES:
        return LOSSES[name]
    if ":" not in name:
        raise UnknownLossError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}, or package.module:function")
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UnknownLossError(f"custom loss {name!r} must be written package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Collapse whitespace: the CLI shows exactly one line.
        reason = " ".join(str(exc).split())
        raise UnknownLossError(f"custom loss {name!r}: cannot import {module_name!r} ({reason})") from exc
    if not hasattr(module, attr):
        raise UnknownLossError(f"custom loss {name!r}: module {module_name!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise UnknownLossError(f"custom loss {name!r}: {attr!r} in {module_name!r} is not callable")
    return LossSpec(name, fn, f"custom loss {name}")
