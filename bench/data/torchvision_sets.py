"""mnist, fashion_mnist, cifar10, celeba: the files torchvision's dataset classes read under data_root(), decoded once
into a uint8 cache beside them; and the order in which compare_gan v1 read CelebA's validation images."""

from __future__ import annotations

import math
import os
import random
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from bench import BenchError
from bench.io import adopt_default_mode
from bench.data.base import Dataset, DatasetMissingError, data_root, fetch_command, register
from bench.data.cache import REAL_CACHE_VERSION, _dataset, cache_readable, cached_arrays
from bench.data.images import DEFAULT_RESIZE, NO_RESIZE, _check_resize, _decode_images, _resized, _UnreadableImage

# The values of celeba's option reference_split, the split in Dataset.test, which FID scores against (its first
# metrics.num_real images), the default first:
# - test: the test partition, in file order;
# - validation: the validation partition in compare_gan v1's order (v1_validation_order), the paper's reference set.
REFERENCE_SPLITS = ("test", "validation")
DEFAULT_REFERENCE = REFERENCE_SPLITS[0]

# How tensor2tensor up to 1.4.2 (later versions name the problem image_celeba) wrote image_celeba_tune, which v1 reads
# (gan_lib.py lines 144-150): the image files' first 162,770 (the train partition) into 100 train shards and the next
# 19,867 (the validation partition) into 10 dev shards, round robin (generator_utils.py lines 135-161), then each
# shard shuffled with Python's random.shuffle, train shards first (lines 441-461), after t2t-datagen seeded `random`
# with its --random_seed (t2t_datagen.py lines 68, 126-130, 177-178). The files are taken in name order: t2t's glob
# (image.py line 171) kept the file system's listing order, which t2t later sorted "to ensure correct split" (commit
# 3f43cd23); only in name order is the dev split the validation partition, v1's reference set.
T2T_SEED = 429459  # t2t_datagen.py's default --random_seed, set before each problem is generated
T2T_TRAIN_SHARDS = 100
T2T_DEV_SHARDS = 10


@dataclass(frozen=True)
class ReferenceDataset(Dataset):
    """A Dataset that says which split its `test` holds: the scorer records it as its protocol's real_split."""

    real_split: str = DEFAULT_REFERENCE


def _check_reference(dataset: str, value: Any) -> str:
    if value not in REFERENCE_SPLITS:
        raise BenchError(f"option reference_split of dataset {dataset!r} must be one of {', '.join(REFERENCE_SPLITS)}, "
                         f"got {value!r}")
    return value


def _py2_shuffle(items: list[int], rng: random.Random) -> None:
    """Python 2's random.shuffle, which t2t-datagen ran under (v1 is Python 2 code): Python 3's draws other indices."""
    for i in reversed(range(1, len(items))):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


def v1_validation_order(n_train: int, n_valid: int) -> list[int]:
    """The positions 0..n_valid-1 of the validation images in the order compare_gan v1 read them: the dev shards
    image_celeba_tune-dev-00000-of-00010 to -00009 one after the other (TFRecordDataset, gan_lib.py line 150), each as
    t2t shuffled it. v1 scored against the first 10,000 (eval_gan_lib.py lines 33, 128-147)."""
    rng = random.Random(T2T_SEED)  # seeds as Python 2's random.seed does for an int
    shards = [list(range(s, n, count)) for n, count in ((n_train, T2T_TRAIN_SHARDS), (n_valid, T2T_DEV_SHARDS))
              for s in range(count)]
    for shard in shards:  # the train shards' shuffles only advance the stream, as they did before the dev ones
        _py2_shuffle(shard, rng)
    return [i for shard in shards[T2T_TRAIN_SHARDS:] for i in shard]


class _Torchvision:
    """A dataset that a torchvision class reads from data_root(), cached under
    data_root()/gan-bench-cache/<name>-<size>[-<resize>][-<reference split>]/ beside its raw files.

    Subclasses say where the raw files are (`verify`), how to decode a split (`decode`) and the side of the
    decoded images (`native_size`). Those whose resize and reference split are options (celeba) override the public
    `load`, `check` and `download` with keyword-only `resize` and `reference_split`; the others always resize with
    DEFAULT_RESIZE and score against their test split.
    """

    hint = ""  # added to missing-file errors; may use {root}
    native_size: int  # the side of the images as decoded, before any resize

    def __init__(self, name: str, cls: type[torchvision.datasets.VisionDataset], num_classes: int) -> None:
        self.name, self.cls, self.num_classes = name, cls, num_classes

    @property
    def url(self) -> str:
        """Where torchvision downloads the files from, for error messages."""
        raise NotImplementedError

    def verify(self, root: Path) -> None:
        """Raises DatasetMissingError naming the first raw file under `root` that is missing or corrupt."""
        raise NotImplementedError

    def decode(self, root: Path, split: str, size: int, resize: str) -> tuple[np.ndarray, np.ndarray]:
        """Split "train" or a reference split: images uint8 N×C×size×size, resized by method `resize`, and labels
        int64 (N,)."""
        raise NotImplementedError

    def prefetch_fix(self) -> str:
        """How to get the files: a command that works as printed (with the data root unless it is the default),
        or another data root."""
        return (f"fetch it with `{fetch_command('--dataset', self.name)}` on a machine with internet, "
                "or set --data-root / GAN_BENCH_DATA to a folder that holds it")

    def error(self, root: Path, problem: str, fix: str | None = None) -> DatasetMissingError:
        return DatasetMissingError(
            f"dataset {self.name!r}: {problem}; {fix or self.prefetch_fix()}{self.hint.format(root=root)}",
            problem=f"dataset {self.name!r}: {problem}")

    def corrupt(self, root: Path, path: Path, reason: str) -> DatasetMissingError:
        return self.error(root, f"corrupt {path} ({reason})", "delete it, then " + self.prefetch_fix())

    def _cache(self, size: int, resize: str, reference: str) -> tuple[Path, dict[str, Any]]:
        folder = f"{self.name}-{size}"
        source = f"torchvision.datasets.{self.cls.__name__}"
        meta = {"version": REAL_CACHE_VERSION, "name": self.name, "image_size": size, "source": source}
        # Each option value that is not the default has a folder of its own, so that two never share a cache; named
        # and recorded only then, so that the caches made before it was an option stay valid.
        if resize != DEFAULT_RESIZE:
            folder += f"-{resize}"
            meta["resize"] = resize
        if reference != DEFAULT_REFERENCE:
            folder += f"-{reference}"
            meta["reference_split"] = reference
        return data_root() / "gan-bench-cache" / folder, meta

    def _load(self, image_size: int, resize: str, reference: str = DEFAULT_REFERENCE) -> ReferenceDataset:
        directory, meta = self._cache(image_size, resize, reference)

        def build() -> dict[str, np.ndarray]:
            root = data_root()
            self.verify(root)
            arrays = {}
            for key, split in (("train", "train"), ("test", reference)):
                arrays[key], arrays[f"{key}_labels"] = self.decode(root, split, image_size, resize)
            return arrays

        arrays = cached_arrays(directory, meta, build)
        applied = NO_RESIZE if image_size == self.native_size else resize
        dataset = _dataset(self.name, arrays, self.num_classes, applied)
        return ReferenceDataset(**{f.name: getattr(dataset, f.name) for f in fields(Dataset)}, real_split=reference)

    def _check(self, image_size: int, resize: str, reference: str = DEFAULT_REFERENCE) -> None:
        directory, meta = self._cache(image_size, resize, reference)
        if not cache_readable(directory, meta):
            self.verify(data_root())

    def load(self, image_size: int) -> Dataset:
        return self._load(image_size, DEFAULT_RESIZE)

    def check(self, image_size: int) -> None:
        self._check(image_size, DEFAULT_RESIZE)

    def download(self) -> None:
        root = data_root()
        try:
            # The constructor's download skips files that are already there and checks the md5 sums; it then
            # decodes a split, which costs little next to the download.
            self.cls(str(root), download=True)
            adopt_default_mode(root)  # gdown downloads through a 0600 temporary file
        except Exception as error:  # urllib, torchvision and gdown raise assorted exception types
            reason = " ".join(str(error).split()).rstrip(".")
            raise BenchError(
                f"dataset {self.name!r}: downloading from {self.url} into {root} failed: {reason}; "
                f"check the internet connection{self.hint.format(root=root)}"
            ) from None


class _Mnist(_Torchvision):
    native_size = 28
    IMAGE_SHAPE = (native_size, native_size)

    @property
    def url(self) -> str:
        return self.cls.mirrors[0]

    def _idx_length(self, root: Path, path: Path, item_shape: tuple[int, ...]) -> int:
        """The item count of IDX file `path`, once its header and size are checked: torchvision checks no sum
        of the extracted files, and a truncated one would fail deep inside its reader."""
        if not path.is_file():
            raise self.error(root, f"missing {path}")
        ndim = 1 + len(item_shape)
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
        # Magic number: two zero bytes, the element type (8: uint8), the number of dimensions.
        if len(header) < 4 + 4 * ndim or header[:4] != bytes([0, 0, 8, ndim]):
            raise self.corrupt(root, path, f"not an IDX file of uint8 with {ndim} dimensions")
        dims = struct.unpack(f">{ndim}I", header[4:])
        if dims[1:] != item_shape:
            raise self.corrupt(root, path, f"items of shape {dims[1:]}, expected {item_shape}")
        expected, found = len(header) + math.prod(dims), path.stat().st_size
        if found != expected:
            raise self.corrupt(root, path, f"{found:,} bytes where its header says {expected:,}")
        return dims[0]

    def verify(self, root: Path) -> None:
        raw = root / self.cls.__name__ / "raw"  # as torchvision's MNIST.raw_folder
        for prefix in ("train", "t10k"):
            images = self._idx_length(root, raw / f"{prefix}-images-idx3-ubyte", self.IMAGE_SHAPE)
            labels_path = raw / f"{prefix}-labels-idx1-ubyte"
            labels = self._idx_length(root, labels_path, ())
            if labels != images:
                raise self.corrupt(root, labels_path, f"{labels:,} labels for {images:,} images")

    def decode(self, root: Path, split: str, size: int, resize: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.cls(str(root), train=split == "train")
        return _resized(dataset.data.unsqueeze(1), size, resize).numpy(), dataset.targets.numpy()


class _Cifar10(_Torchvision):
    native_size = 32

    @property
    def url(self) -> str:
        return self.cls.url

    def verify(self, root: Path) -> None:
        cls = self.cls
        files = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
        for filename, md5 in files:
            path = root / cls.base_folder / filename
            if not path.is_file():
                raise self.error(root, f"missing {path}")
            # The check the CIFAR-10 class itself calls, by the same name.
            if not torchvision.datasets.cifar.check_integrity(str(path), md5):
                raise self.corrupt(root, path, "its md5 sum is not the one torchvision expects")

    def decode(self, root: Path, split: str, size: int, resize: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.cls(str(root), train=split == "train")
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # torchvision gives N×H×W×C
        return _resized(images, size, resize).numpy(), np.asarray(dataset.targets, dtype=np.int64)


class _CelebA(_Torchvision):
    # The usual centred face crop of the 178×218 aligned images, v1's too (gan_lib.py line 88, whose
    # resize_image_with_crop_or_pad takes the same offsets as torchvision's center_crop here).
    CROP = 160
    native_size = CROP
    hint = (
        " (torchvision downloads CelebA from Google Drive, which is often rate-limited: the files can also be "
        "placed by hand under {root}/celeba/, i.e. img_align_celeba/ and the list_*.txt and identity_CelebA.txt files)"
    )

    @property
    def url(self) -> str:
        return "Google Drive (the file ids in torchvision.datasets.CelebA.file_list)"

    # The paper's options: resize tf1_bilinear (see bench.data.images.RESIZES) and reference_split validation (see
    # REFERENCE_SPLITS).
    def load(self, image_size: int, *, resize: str = DEFAULT_RESIZE,
             reference_split: str = DEFAULT_REFERENCE) -> ReferenceDataset:
        return self._load(image_size, _check_resize(self.name, resize), _check_reference(self.name, reference_split))

    def check(self, image_size: int, *, resize: str = DEFAULT_RESIZE, reference_split: str = DEFAULT_REFERENCE) -> None:
        self._check(image_size, _check_resize(self.name, resize), _check_reference(self.name, reference_split))

    def download(self, *, resize: str = DEFAULT_RESIZE, reference_split: str = DEFAULT_REFERENCE) -> None:
        _check_resize(self.name, resize)  # before the download rather than after it
        _check_reference(self.name, reference_split)
        super().download()

    def verify(self, root: Path) -> None:
        folder = root / self.cls.base_folder
        for _, md5, filename in self.cls.file_list:
            if filename.endswith(".zip"):
                continue  # torchvision only needs the extracted images
            path = folder / filename
            if not path.is_file():
                raise self.error(root, f"missing {path}")
            # The check the CelebA class itself calls, by the same name.
            if not torchvision.datasets.celeba.check_integrity(str(path), md5):
                raise self.corrupt(root, path, "its md5 sum is not the one torchvision expects")
        images = folder / "img_align_celeba"
        if not images.is_dir():
            raise self.error(root, f"missing {images}")
        # A half-extracted archive is the likely mishap when the files are placed by hand; torchvision does
        # not look, and listing the folder is quick next to decoding it.
        lines = (folder / "list_eval_partition.txt").read_text().splitlines()
        listed = [fields[0] for fields in map(str.split, lines) if fields]
        absent = sorted(set(listed) - set(os.listdir(images)))
        if absent:
            more = f" and {len(absent) - 1:,} more of the {len(listed):,} images" if len(absent) > 1 else ""
            raise self.error(root, f"missing {images / absent[0]}{more}")

    def _filenames(self, root: Path, split: str) -> list[str]:
        """The image files of torchvision's split ("train", "valid", "test"), in list_eval_partition.txt's order."""
        return self.cls(str(root), split=split, target_type=[]).filename

    def decode(self, root: Path, split: str, size: int, resize: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "validation":
            # t2t took the sorted files' rows 162,770-182,636 for its dev split: on CelebA, the validation partition.
            names = self._filenames(root, "valid")
            names = [names[i] for i in v1_validation_order(len(self._filenames(root, "train")), len(names))]
        else:
            names = self._filenames(root, split)
        folder = root / self.cls.base_folder / "img_align_celeba"
        paths = [folder / name for name in names]
        try:
            images = _decode_images(paths, self.CROP, size, resize, f"celeba {split}")
        except _UnreadableImage as bad:
            fix = f"extract it again from img_align_celeba.zip, or delete {folder} and {self.prefetch_fix()}"
            raise self.error(root, f"corrupt {bad.path} ({bad.reason})", fix) from None
        # CelebA has no classes: the domain classifier behind FID features cannot be trained on it.
        return images, np.zeros(len(images), dtype=np.int64)


def _register_torchvision(dataset: _Torchvision, default_size: int, description: str, channels: int = 1) -> None:
    register(dataset.name, default_size, description, channels=channels, check=dataset.check,
             download=dataset.download)(dataset.load)


_register_torchvision(
    _Mnist("mnist", torchvision.datasets.MNIST, num_classes=10),
    28,
    "MNIST handwritten digits: 28×28 gray, 60k/10k, 10 classes",
)
_register_torchvision(
    _Mnist("fashion_mnist", torchvision.datasets.FashionMNIST, num_classes=10),
    28,
    "Fashion-MNIST clothing: 28×28 gray, 60k/10k, 10 classes",
)
_register_torchvision(
    _Cifar10("cifar10", torchvision.datasets.CIFAR10, num_classes=10),
    32,
    "CIFAR-10 photos: 32×32 RGB, 50k/10k, 10 classes",
    channels=3,
)
_register_torchvision(
    _CelebA("celeba", torchvision.datasets.CelebA, num_classes=0),
    64,
    "CelebA aligned faces: centred 160×160 crop resized (option resize), RGB, 162,770 train; FID against the 19,962 "
    "test images, or (option reference_split: validation) the 19,867 validation ones in compare_gan v1's order; no "
    "classes",
    channels=3,
)

