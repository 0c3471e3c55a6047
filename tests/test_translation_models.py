"""The image-to-image nets (bench/models/translation.py): shapes and ranges at every side they take, the PatchGAN's
patch scores and features, the U-Net's encoder maps and skip connections, the PatchNCE heads, the initialisation."""

import pytest
import torch
from torch import nn

from bench import BenchError
from bench.models.translation import PatchGAN, PatchNCEHead, UNet, check_shape, down_levels, init_weights

# 10 (10 → 5) has an odd bottom; 11 takes no halving at all; both pass check_shape.
SIDES = [8, 10, 11, 16, 28, 32, 64]
CHANNELS = [(1, 1), (1, 3), (3, 3)]
BATCH = 2
# Patches per image: min(down_levels, 3) halvings, at least one, then a size-preserving conv.
PATCHES = {8: 4 * 4, 10: 5 * 5, 11: 5 * 5, 16: 4 * 4, 28: 7 * 7, 32: 4 * 4, 64: 8 * 8}


def _images(channels, side, batch=BATCH):
    return torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("side, levels", [(8, 1), (10, 1), (11, 0), (16, 2), (28, 2), (32, 3), (64, 4)])
def test_down_levels(side, levels):
    assert down_levels(side) == levels


def test_check_shape():
    for shape in [(1, 8, 8), (3, 11, 11), (1, 28, 28), (3, 64, 64)]:
        check_shape(shape)
    for shape, named in [((1, 7, 7), "7×7"), ((3, 16, 12), "16×12")]:
        with pytest.raises(BenchError) as error:
            check_shape(shape)
        assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("cin, cout", CHANNELS, ids=lambda c: str(c))
@pytest.mark.parametrize("side", SIDES)
def test_unet(side, cin, cout):
    torch.manual_seed(0)
    G = UNet(cin, cout, side)
    init_weights(G)
    x = _images(cin, side)
    y = G(x)
    assert y.shape == (BATCH, cout, side, side)
    assert y.min() >= 0 and y.max() <= 1

    features = G.encode(x)
    assert [f.shape[1] for f in features] == G.encoder_channels
    assert [f.shape for f in features] == [(BATCH, c, side // 2**i, side // 2**i)
                                           for i, c in enumerate(G.encoder_channels)]

    # Instance norm has no running statistics: eval mode computes exactly what train mode does.
    G.eval()
    assert torch.equal(G(x), y)


def test_unet_channels_are_capped():
    assert UNet(3, 3, 64, base=4).encoder_channels == [4, 8, 16, 32, 32]


@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-bn", "bn"])
@pytest.mark.parametrize("side", SIDES)
def test_patchgan(side, batchnorm):
    torch.manual_seed(0)
    D = PatchGAN(4, side, batchnorm)  # a conditional D: 1 source + 3 target channels
    init_weights(D)
    x = _images(4, side)
    scores = D(x)
    assert scores.shape == (BATCH, PATCHES[side])
    same, features = D.scores_and_features(x)
    assert torch.equal(same, scores)
    assert features.shape[0] == BATCH and features.shape[1] % PATCHES[side] == 0  # channels × the patch grid
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == (batchnorm and down_levels(side) > 1)


def test_unet_learns_the_identity():
    """Trained to copy a fixed batch, a U-Net gets close in a few dozen steps: the gradient reaches every block, and
    the full-resolution skip gives the output conv the input's detail."""
    torch.manual_seed(0)
    G = UNet(1, 1, 16, base=8)
    init_weights(G)
    x = _images(1, 16, batch=4)
    optimiser = torch.optim.Adam(G.parameters(), lr=3e-3)
    start = (G(x) - x).abs().mean().item()
    for _ in range(50):
        loss = (G(x) - x).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (G(x) - x).abs().mean().item() < start / 4


def test_patchnce_head():
    torch.manual_seed(0)
    G = UNet(3, 3, 16)
    head = PatchNCEHead(G.encoder_channels, dim=16)
    for layer, features in enumerate(G.encode(_images(3, 16))):
        patches = features.permute(0, 2, 3, 1).flatten(0, 2)  # every position as a row (N, c)
        projected = head.project(layer, patches)
        assert projected.shape == (patches.shape[0], 16)
        assert torch.allclose(projected.norm(dim=1), torch.ones(patches.shape[0]), atol=1e-5)


def test_init_weights():
    torch.manual_seed(0)
    G, D = UNet(3, 3, 64), PatchGAN(6, 64, batchnorm=True)
    init_weights(G)
    init_weights(D)
    largest = max((m for m in G.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    assert largest.weight.numel() > 100_000
    assert 0.015 < largest.weight.std().item() < 0.025
    norms = [m for net in (G, D) for m in net.modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert any(isinstance(m, nn.BatchNorm2d) for m in norms) and any(isinstance(m, nn.InstanceNorm2d) for m in norms)
    scales = torch.cat([m.weight for m in norms]).detach()
    assert abs(scales.mean().item() - 1) < 0.01 and 0.01 < scales.std().item() < 0.03
    biases = [m.bias for net in (G, D) for m in net.modules() if getattr(m, "bias", None) is not None]
    assert all((b == 0).all() for b in biases)
