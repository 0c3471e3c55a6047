"""Per-image similarity of an image-to-image trial's outputs to their targets: PSNR, SSIM, and a perceptual distance.

Images are float N×C×H×W in [0, 1] (data range 1); each function returns one value per image, shape (N,), and is
differentiable, so that a loss term (bench.terms: `psnr`, `ssim`, `perceptual`) and the metric are one computation.
PSNR and SSIM are torchmetrics' functional ones, checked against scikit-image in tests/test_image_metrics.py.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

# torchmetrics is imported where it is used: importing any of it loads all its metrics (seconds), which a trial
# without these terms or metrics should not pay.

# SSIM's constants (Wang et al. 2004): an 11-tap Gaussian window of σ 1.5 (torchmetrics sizes it 2·⌊3.5σ + 0.5⌋ + 1
# = 11, as scikit-image and scipy.ndimage do for truncate = 3.5), K1 = 0.01, K2 = 0.03, population covariances.
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03
SSIM_PAD = 5  # the window's radius: the images are reflect-padded by it, so sides of 6 px and more only


def _check(x: Tensor, y: Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two N×C×H×W batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio of each image pair in dB, 10·log10(1 / MSE) over its C·H·W values, (N,).

    Identical images give +inf (MSE 0), as in torchmetrics and scikit-image: the `psnr` term bounds the MSE away from
    0 instead. torchmetrics computes the constant 10 / ln 10 in float32, so even float64 inputs get float32 accuracy
    (a relative error near 1e-7)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(x, y)
    return peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity of each image pair (Wang et al. 2004), (N,); 1 for identical images.

    The local statistics use the 11-px Gaussian window at every one of the H×W positions: at the borders it reads the
    images reflect-padded by 5 px (torch's "reflect", without repeating the edge: d c b | a b c d), and the map is
    averaged over all positions and channels. This is torchmetrics' SSIM map (and, from torchmetrics 1.4.2, its mean),
    defined for sides of 6 px and more, and equal (to 1e-6 in float32) to scikit-image's `structural_similarity` of the
    images padded that way (`np.pad(mode="reflect")`). Unpadded, scikit-image (like Wang et al.'s code) averages only
    the (H−10)×(W−10) positions whose window lies inside the image, so it needs 11 px and on small images gives another
    value: on noisy pairs they differed by up to 0.04 at 16 px and 0.025 at 28 px, while the maps agree over those inner
    positions."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(x, y)
    # The mean of the full map, not torchmetrics' own mean: before 1.4.2 that averaged the inner positions only (NaN
    # under 11 px); from 1.4.2 on it is this mean. The map itself is the same in both, so this value is too.
    _, full = structural_similarity_index_measure(x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, reduction="none",
                                                  data_range=1.0, k1=SSIM_K1, k2=SSIM_K2, return_full_image=True)
    return full.flatten(1).mean(1)


def perceptual_distance(feature_net: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean squared difference of a fixed network's features of each image pair, ‖φ(x) − φ(y)‖² / dim, (N,)."""
    _check(x, y)
    return (feature_net(x).flatten(1) - feature_net(y).flatten(1)).square().mean(1)
