"""bench.image_metrics against scikit-image, an independent implementation (numpy and scipy.ndimage, float64), on
random and structured images, grey and RGB, 16 and 28 px; and against known values.

Tolerances, the tightest that hold, and why:
- SSIM: 1e-6 absolute in float32 (seen: 5.6e-7), 1e-12 in float64 (seen: 1.5e-15). torchmetrics reflect-pads the
  images by the window's radius (5 px) and averages the SSIM map over all H×W positions; scikit-image averages only
  the positions whose window lies inside the image. So scikit-image is given the images padded as torch pads them
  (np.pad "reflect" is torch's "reflect"), and over the image's own H×W positions the two then compute the same thing.
  Unpadded, the maps agree over the inner (H−10)×(W−10) positions: 5e-6 in float32 (seen: 2.4e-6), the mean of only
  36 positions at 16 px. In float32 a position's SSIM is off by up to 4e-5 where the window's variance is small (σ² =
  E x² − μ² cancels), and averaging over more positions brings the error of the mean down.
- PSNR: 2.5e-7 relative in float32 (seen: 1.2e-7, one float32 ulp); 1e-7 in float64 (seen: 4.5e-8 on every value,
  as torchmetrics computes the constant 10 / ln 10 in float32 whatever the inputs' precision).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio as skimage_psnr
from skimage.metrics import structural_similarity as skimage_ssim

from bench import image_metrics

SSIM_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}
INNER_SSIM_TOLERANCE = {torch.float32: 5e-6, torch.float64: 1e-12}
PSNR_TOLERANCE = {torch.float32: 2.5e-7, torch.float64: 1e-7}  # relative


def structured(channels: int, side: int) -> torch.Tensor:
    """One image (1, C, side, side) in [0, 1]: a sinusoidal pattern per channel plus a disc."""
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    pattern = torch.stack([torch.sin(2 * math.pi * (k + 1) * x) * torch.cos(2 * math.pi * (k + 2) * y)
                           for k in range(channels)])
    disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1).float()
    return (0.35 + 0.35 * pattern + 0.3 * disc).clamp(0, 1)[None]


def pairs(channels: int, side: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches x, y of image pairs: random images with noise of two strengths, and structured images shifted, with
    their contrast lowered, blurred, slightly noised."""
    g = torch.Generator().manual_seed(channels * 100 + side)
    noise = lambda like, scale: scale * torch.randn(like.shape, generator=g)
    random = torch.rand(2, channels, side, side, generator=g)
    image = structured(channels, side)
    x = torch.cat([random, image.expand(4, -1, -1, -1)])
    y = torch.cat([(random + noise(random, 0.2)).clamp(0, 1), image.roll(1, -1), 0.8 * image + 0.1,
                   F.avg_pool2d(image, 3, 1, 1, count_include_pad=False), (image + noise(image, 0.01)).clamp(0, 1)])
    return x.to(dtype), y.to(dtype)


def skimage_ssims(x: torch.Tensor, y: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """scikit-image's SSIM of each pair with Wang et al.'s settings, the images reflect-padded by `pad` px first."""
    def image(t):
        return np.pad(t.double().numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")

    return torch.tensor([skimage_ssim(image(a), image(b), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0, channel_axis=0)
                         for a, b in zip(x, y)], dtype=torch.float64)


CASES = [(channels, side, dtype)
         for channels in (1, 3) for side in (16, 28) for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("channels, side, dtype", CASES)
def test_ssim_is_scikit_images_on_the_images_padded_as_torchmetrics_pads_them(channels, side, dtype):
    x, y = pairs(channels, side, dtype)
    ours = image_metrics.ssim(x, y)
    assert ours.shape == (len(x),) and ours.dtype == dtype
    assert torch.allclose(ours.double(), skimage_ssims(x, y, pad=image_metrics.SSIM_PAD), rtol=0,
                          atol=SSIM_TOLERANCE[dtype])


@pytest.mark.parametrize("channels, side, dtype", CASES)
def test_the_ssim_map_is_scikit_images_over_the_positions_whose_window_lies_inside(channels, side, dtype):
    """Unpadded, scikit-image (and Wang et al.) average the map over the inner positions only: those agree."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = pairs(channels, side, dtype)
    _, full = structural_similarity_index_measure(x, y, sigma=image_metrics.SSIM_SIGMA, data_range=1.0,
                                                  k1=image_metrics.SSIM_K1, k2=image_metrics.SSIM_K2,
                                                  reduction="none", return_full_image=True)
    r = image_metrics.SSIM_PAD
    inner = full[..., r:-r, r:-r].flatten(1).mean(1)
    assert torch.allclose(inner.double(), skimage_ssims(x, y), rtol=0, atol=INNER_SSIM_TOLERANCE[dtype])


@pytest.mark.parametrize("channels, side, dtype", CASES)
def test_psnr_is_scikit_images(channels, side, dtype):
    x, y = pairs(channels, side, dtype)
    ours = image_metrics.psnr(x, y)
    theirs = torch.tensor([skimage_psnr(a.double().numpy(), b.double().numpy(), data_range=1.0) for a, b in zip(x, y)],
                          dtype=torch.float64)
    assert ours.shape == (len(x),) and ours.dtype == dtype
    assert torch.allclose(ours.double(), theirs, rtol=PSNR_TOLERANCE[dtype], atol=0)


def test_known_values():
    x = torch.rand(3, 3, 16, 16) * 0.9
    assert torch.allclose(image_metrics.ssim(x, x), torch.ones(3), rtol=0, atol=1e-6)
    assert torch.allclose(image_metrics.psnr(x + 0.1, x), torch.full((3,), 20.0), rtol=0, atol=1e-4)  # MSE 0.01
    assert torch.equal(image_metrics.psnr(x, x), torch.full((3,), math.inf))  # left infinite, as documented
    # An image against its negative around the mean has SSIM's structure term −1.
    assert image_metrics.ssim(x[:1], 0.9 - x[:1]).item() < 0


def test_ssim_at_small_sides_is_defined_from_6_px_and_differentiable():
    for side in (6, 8, 16):
        x, y = torch.rand(2, 1, side, side), torch.rand(2, 1, side, side, requires_grad=True)
        value = image_metrics.ssim(x, y)
        assert value.shape == (2,) and torch.isfinite(value).all()
        value.sum().backward()
        assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="[Pp]adding size"):  # the 5-px reflect padding needs 6 px
        image_metrics.ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))


def test_perceptual_distance_is_the_mean_squared_feature_difference_per_image():
    net = lambda images: torch.cat([2 * images, images.mean((2, 3), keepdim=True)], dim=3)
    x = torch.zeros(2, 1, 1, 2)
    y = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 3.0]]]])
    # features of y: (2, 2, 1) and (0, 6, 1.5), of x: zeros; means of the squares over 3 values
    expected = torch.tensor([(4 + 4 + 1) / 3, (0 + 36 + 2.25) / 3])
    assert torch.allclose(image_metrics.perceptual_distance(net, x, y), expected)


def test_mismatched_shapes_are_refused_not_broadcast():
    with pytest.raises(ValueError, match=r"one shape, got \(2, 1, 8, 8\) and \(1, 1, 8, 8\)"):
        image_metrics.psnr(torch.rand(2, 1, 8, 8), torch.rand(1, 1, 8, 8))
