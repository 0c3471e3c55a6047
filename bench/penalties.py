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

from bench import BenchError

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
    return (_input_gradient(discriminator, x).norm(dim=1) - 1).square().mean()


def gradient_penalty(
    discriminator: Discriminator, real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E (||grad D(x_hat)||_2 - 1)^2 on random real-fake interpolates."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = eps * real + (1 - eps) * fake
    return _unit_norm_penalty(discriminator, x_hat)


def dragan_penalty(
    discriminator: Discriminator,
    real: Tensor,
    fake: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DRAGAN (Kodali et al. 2017): E (||grad D(x_hat)||_2 - 1)^2 on real points perturbed by noise.

    x_hat = real + 0.5 * std(real) * delta with delta ~ U[0, 1) elementwise and std over the whole batch,
    as in the authors' v1 (paper) code. That noise only ever points one way; later code (e.g. compare_gan)
    uses centred noise instead. `fake` is ignored; it is accepted so all penalties share one signature.
    """
    delta = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
    # Population std, matching the authors' numpy x.std().
    x_hat = real + 0.5 * real.std(correction=0) * delta
    return _unit_norm_penalty(discriminator, x_hat)


def r1_penalty(discriminator: Discriminator, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E ||grad D(x)||_2^2 at real points; the caller multiplies by gamma / 2."""
    return _input_gradient(discriminator, real).square().sum(dim=1).mean()


def clip_weights(module: nn.Module, clip: float) -> None:
    """WGAN's Lipschitz constraint: clamps every parameter of `module` in place to [-clip, clip]."""
    with torch.no_grad():
        for param in module.parameters():
            param.clamp_(-clip, clip)


PENALTIES: dict[str, Penalty] = {"wgan_gp": gradient_penalty, "dragan": dragan_penalty}


def get(name: str) -> Penalty:
    """The penalty registered as `name`, called as fn(discriminator, real, fake, generator)."""
    try:
        return PENALTIES[name]
    except KeyError:
        raise BenchError(f"unknown penalty {name!r}; valid: {', '.join(PENALTIES)}") from None
