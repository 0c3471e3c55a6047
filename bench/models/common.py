"""Pieces shared by the model modules: the VAE's Gaussian encoder and the two initialisations every model can take."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class Critic(nn.Sequential):
    """D as a critic: its body (images to penultimate features), a linear layer to one score, and a flatten to (B,).

    A Sequential, so its parameters keep the names and the construction order (hence the initial values) they had
    as a plain one. `scores_and_features` gives the scores and the body's features from one forward pass, for loss
    terms on D's features (feature matching, contrastive) that must not cost a second one."""

    def scores_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *body, head, flatten = self
        features = x
        for layer in body:
            features = layer(features)
        return flatten(head(features)), features


class GaussianEncoder(nn.Module):
    """The VAE's q(z|x) = N(mu, diag(sigma²)): a discriminator body, then one linear layer to 2·z_dim.

    sigma = 1e-6 + softplus(raw), as compare_gan v1 parametrises it (gans/VAE.py line 56): positive by
    construction, and the 1e-6 keeps it away from 0 where the KL's log(sigma²) would blow up.
    """

    def __init__(self, body: nn.Module, features: int, z_dim: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(features, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.head(self.body(x)).chunk(2, dim=1)
        return mu, 1e-6 + nn.functional.softplus(raw)


def init_compare_gan(net: nn.Module) -> None:
    """Re-draws `net`'s weights as compare_gan v1 does (gans/ops.py lines 42-92), in place.

    Linear (ops.py 50-55) and transposed convolutions (ops.py 85-91): N(0, 0.02). Convolutions (ops.py 73-78):
    tf.truncated_normal_initializer(stddev=0.02), which re-draws values beyond 2 standard deviations, so ±0.04.
    Every bias 0. Batch norm (ops.py 59-68, tf.contrib.layers.batch_norm): scale 1, offset 0, epsilon 1e-3 and
    decay 0.999; TF's moving average is decay·old + (1 − decay)·new, PyTorch's (1 − momentum)·old + momentum·new,
    so momentum 0.001.
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02, a=-0.04, b=0.04)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.momentum, m.eps = 0.001, 1e-3


def init_pytorch(net: nn.Module) -> None:
    """Keeps PyTorch's layer defaults, drawn when the layers were constructed: nothing is re-drawn."""
