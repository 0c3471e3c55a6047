"""Image-to-image nets (pix2pix, CycleGAN, CUT): a small U-Net generator, a PatchGAN discriminator, CUT's PatchNCE
projection heads, and pix2pix's initialisation. Square images of side >= 8; the trial builds the nets directly.

U-Net: conv3×3 (base) → lrelu → L × [conv4×4 s2 doubling the channels (at most 8·base) → IN → lrelu], then
       L × [deconv4×4 s2 → IN → relu → concat the encoder's map at that resolution] → conv3×3 (c) → sigmoid.
PatchGAN: conv4×4 s2 (base) → lrelu → min(L, 3) − 1 × [conv4×4 s2 doubling the channels → [BN] → lrelu]
          → conv3×3 s1 (1): one raw score per patch.
L = down_levels(side). IN: instance norm (affine), which uses each image's own statistics, so G computes the same
thing in train and eval mode. [BN]: batch norm only when asked (the search's d_batchnorm).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from bench import BenchError


def check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h != w or h < 8:
        raise BenchError(f"image-to-image models: images must be square with a side of at least 8, got {h}×{w}")


def down_levels(side: int) -> int:
    """How many stride-2 halvings the nets make: while the side is even and the half is at least 4 (28 → 14 → 7: 2).

    Only even sides are halved, so a stride-2 transposed convolution restores each size exactly."""
    levels = 0
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        levels += 1
    return levels


class UNet(nn.Module):
    """pix2pix's generator, small: images in [0, 1] to images in [0, 1] of the same side.

    `encode` gives the encoder's feature maps (the stem's, then each down block's, from fine to coarse), which CUT's
    PatchNCE loss reads for the source and for G(source); `encoder_channels` lists their channel counts."""

    def __init__(self, in_channels: int, out_channels: int, side: int, base: int = 32):
        super().__init__()
        levels = down_levels(side)
        self.encoder_channels = [base] + [min(base * 2**i, 8 * base) for i in range(1, levels + 1)]
        channels = self.encoder_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 3, 1, 1), nn.LeakyReLU(0.2))
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[i - 1], channels[i], 4, 2, 1), nn.InstanceNorm2d(channels[i], affine=True),
                          nn.LeakyReLU(0.2))
            for i in range(1, levels + 1))
        # Up block i brings level i to level i − 1; below the bottom, its input is the previous output concatenated
        # with the encoder's map, hence twice the channels.
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(channels[i] * (1 if i == levels else 2), channels[i - 1], 4, 2, 1),
                          nn.InstanceNorm2d(channels[i - 1], affine=True), nn.ReLU())
            for i in range(levels, 0, -1))
        # Without down blocks (an odd side) nothing is concatenated: the stem feeds the output conv directly.
        self.out = nn.Sequential(nn.Conv2d(base * (2 if levels else 1), out_channels, 3, 1, 1), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, h = self.encode(x)
        for up, skip in zip(self.ups, reversed(skips)):
            h = torch.cat([up(h), skip], dim=1)
        return self.out(h)


class PatchGAN(nn.Module):
    """pix2pix's discriminator: images to one raw score per patch, shape (B, P).

    For pix2pix's conditional D, build it with in_channels = source + target channels and pass the concatenation."""

    def __init__(self, in_channels: int, side: int, batchnorm: bool = False, base: int = 32):
        super().__init__()
        # No batch norm on the first block, as in pix2pix and the DCGAN D.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = base
        # At most 3 halvings, as in pix2pix's 70×70 PatchGAN: at side 64 each score sees a 38×38 patch; at side 32
        # and below the receptive field spans the image, but each score still comes from its own position.
        for _ in range(min(down_levels(side), 3) - 1):
            norm = [nn.BatchNorm2d(channels * 2)] if batchnorm else []
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1), *norm, nn.LeakyReLU(0.2)]
            channels *= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 1, 3, 1, 1)

    def scores_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B, P), the last block's features flattened to (B, -1)) from one forward pass."""
        features = self.body(x)
        return self.head(features).flatten(1), features.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_and_features(x)[0]


class PatchNCEHead(nn.Module):
    """CUT's projection heads (Park et al. 2020): one MLP per encoder layer, Linear(c, dim) → ReLU → Linear(dim, dim).

    `channels` is the generator's `encoder_channels`. The caller samples patches from a layer's map (B, c, H, W) as
    rows of shape (N, c); `project` maps them to unit vectors, whose dot products are PatchNCE's similarities."""

    def __init__(self, channels: list[int], dim: int = 64):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels)

    def project(self, layer: int, patches: torch.Tensor) -> torch.Tensor:
        """(N, c) patches of encoder layer `layer` to (N, dim), each row L2-normalised."""
        return nn.functional.normalize(self.mlps[layer](patches), dim=1)


def init_weights(net: nn.Module) -> None:
    """pix2pix's initialisation ("normal", gain 0.02), in place: weights N(0, 0.02), norm scales N(1, 0.02),
    biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, _NormBase) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
