"""Pieces shared by the model modules."""

from __future__ import annotations

import torch
from torch import nn


class GaussianEncoder(nn.Module):
    """The VAE's q(z|x) = N(mu, diag(exp(logvar))): a discriminator body, then one linear layer to 2·z_dim."""

    def __init__(self, body: nn.Module, features: int, z_dim: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(features, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar
