"""Gradient penalties and weight clipping: the constraints some losses put on the discriminator.

Penalties return a scalar whose gradient reaches D's parameters and nothing upstream of the inputs
(such as G), so adding it to D's loss before backward() is all a training step needs. Gradient
norms are per sample, over all non-batch dimensions. Randomness comes from an optional torch.Generator,
which must live on the inputs' device, so that runs are reproducible.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from bench.registry import Registry

Discriminator = Callable[[Tensor], Tensor]
Penalty = Callable[[Discriminator, Tensor, Tensor | None, torch.Generator | None], Tensor]


def _input_gradient(discriminator: Discriminator, x: Tensor) -> Tensor:
    """dD/dx for each sample, flattened to (B, -1), differentiable with respect to D's parameters."""
    # Detached so that the penalty trains D only, never whatever produced x (such as G).
    x = x.detach().requires_grad_(True)
    # Samples are scored independently, so the gradient of the sum is each score's own input gradient.
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(start_dim=1)


def _unit_norm_penalty(discriminator: Discriminator, x: Tensor) -> Tensor:
    # compare_gan v1 (gans/WGAN_GP.py lines 80-82, gans/DRAGAN.py lines 93-95) adds 1e-4 under the square root,
    # which keeps the norm's gradient finite where D's input gradient vanishes.
    slopes = (1e-4 + _input_gradient(discriminator, x).square().sum(dim=1)).sqrt()
    return (slopes - 1).square().mean()


def _per_sample_uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """alpha ~ U[0, 1), one per sample, broadcastable against x."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def gradient_penalty(
    discriminator: Discriminator, real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E (||grad D(x_hat)||_2 - 1)^2 on random real-fake interpolates.

    x_hat = x + alpha (G(z) - x), alpha ~ U[0, 1) per sample, on D's raw score, as in compare_gan v1
    (gans/WGAN_GP.py lines 74-83).
    """
    alpha = _per_sample_uniform(real, generator)
    x_hat = real + alpha * (fake - real)
    return _unit_norm_penalty(discriminator, x_hat)


def dragan_penalty(
    discriminator: Discriminator,
    real: Tensor,
    fake: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DRAGAN (Kodali et al. 2017) as the paper ran it: E (||grad sigmoid(D(x_hat))||_2 - 1)^2 around the real data.

    compare_gan v1 (gans/DRAGAN.py lines 45-46 and 86-96): x_p = x + 0.5 * std(x) * U[0, 1) elementwise, with
    the population std over the whole batch; x_hat = x + alpha (x_p - x) with alpha ~ U[0, 1) per sample; and
    the gradient is that of D's sigmoid output, not of its logit. (That noise only ever points one way; later
    compare_gan versions use centred noise on the logit.) `fake` is ignored; it is accepted so all penalties
    share one signature.
    """
    delta = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
    perturbed = real + 0.5 * real.std(correction=0) * delta  # numpy's x.std() is the population std
    alpha = _per_sample_uniform(real, generator)
    x_hat = real + alpha * (perturbed - real)
    return _unit_norm_penalty(lambda x: torch.sigmoid(discriminator(x)), x_hat)


def r1_penalty(discriminator: Discriminator, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E ||grad D(x)||_2^2 at real points; the caller multiplies by gamma / 2."""
    return _input_gradient(discriminator, real).square().sum(dim=1).mean()


def clip_weights(module: nn.Module, clip: float) -> None:
    """WGAN's Lipschitz constraint: clamps every parameter of `module` in place to [-clip, clip]."""
    with torch.no_grad():
        for param in module.parameters():
            param.clamp_(-clip, clip)


# What a loss's `penalty` names, each called as fn(discriminator, real, fake, generator).
PENALTIES: Registry[Penalty] = Registry("penalty")
PENALTIES.add("wgan_gp", gradient_penalty, "WGAN-GP: (||grad D||_2 - 1)^2 on random real-fake interpolates")
PENALTIES.add("dragan", dragan_penalty, "DRAGAN: (||grad sigmoid(D)||_2 - 1)^2 around the real data")
