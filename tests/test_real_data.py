"""The real datasets, from small files written here in the formats torchvision reads, through torchvision's classes."""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench import BenchError, data
from bench.data import DatasetMissingError
from bench.data import cache as data_cache
from bench.data import images as data_images

N_TRAIN, N_TEST = 12, 6


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data root and cache per test."""
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GAN_BENCH_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _assert_one_line(error: BaseException, *parts: object) -> None:
    message = str(error)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, (part, message)


def _counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Counts the calls of owner.name (still calling it)."""
    calls = []
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _load_quietly(name: str, *args: object, **options: object) -> data.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about non-writable numpy arrays
        return data.load(name, *args, **options)


def test_registry_lists_the_real_datasets() -> None:
    expected = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "celeba": 64, "folder": 64}
    assert set(expected) <= set(data.DATASETS.names())
    for name, size in expected.items():
        assert data.default_size(name) == size
        assert data.DATASETS.description(name) and "\n" not in data.DATASETS.description(name)


# ---------------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files under <root>/<class name>/raw/


def _idx_bytes(array: np.ndarray) -> bytes:
    # Magic number: two zero bytes, 8 for uint8, the number of dimensions; then each dimension, big-endian.
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN).astype(np.uint8),
        "test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST).astype(np.uint8),
    }


IDX_FILES = {
    "train": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_mnist(root: Path, folder: str = "MNIST", seed: int = 0) -> dict[str, np.ndarray]:
    arrays = _mnist_arrays(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for key, filename in IDX_FILES.items():
        (raw / filename).write_bytes(_idx_bytes(arrays[key]))
    return arrays


def _assert_mnist(dataset: data.Dataset, arrays: dict[str, np.ndarray]) -> None:
    assert dataset.train.shape == (N_TRAIN, 1, 28, 28) and dataset.test.shape == (N_TEST, 1, 28, 28)
    assert dataset.train.dtype == torch.uint8 and dataset.train_labels.dtype == torch.int64
    assert np.array_equal(dataset.train[:, 0].numpy(), arrays["train"])
    assert np.array_equal(dataset.test[:, 0].numpy(), arrays["test"])
    assert dataset.train_labels.tolist() == arrays["train_labels"].tolist()
    assert dataset.test_labels.tolist() == arrays["test_labels"].tolist()
    assert dataset.num_classes == 10


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_pixels_labels_and_split_are_the_files(root: Path, name: str, folder: str) -> None:
    arrays = write_mnist(root, folder)
    dataset = _load_quietly(name)
    assert dataset.name == name and dataset.image_shape == (1, 28, 28)
    assert dataset.resize == "none"
    _assert_mnist(dataset, arrays)


def test_mnist_cache_round_trips_and_is_reused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(root)
    decodes = _counting(monkeypatch, torchvision.datasets.MNIST, "_load_data")
    first = data.load("mnist")
    assert len(decodes) == 2  # train and test

    cache = root / "gan-bench-cache" / "mnist-28"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["name"] == "mnist" and meta["image_size"] == 28 and meta["source"] == "torchvision.datasets.MNIST"
    assert meta["shapes"]["train"] == [N_TRAIN, 1, 28, 28] and meta["shapes"]["test_labels"] == [N_TEST]
    assert np.array_equal(np.load(cache / "train.npy"), arrays["train"][:, None])
    assert np.array_equal(np.load(cache / "test_labels.npy"), arrays["test_labels"].astype(np.int64))

    second = _load_quietly("mnist")
    assert len(decodes) == 2
    _assert_mnist(second, arrays)
    _assert_mnist(first, arrays)
    # The tensors of a cached load may be written to without touching the cache (copy-on-write).
    second.train.zero_()
    _assert_mnist(data.load("mnist"), arrays)


@pytest.mark.parametrize("damage", ["truncate", "reshape", "meta"])
def test_mnist_damaged_or_mismatched_cache_is_rebuilt(
    root: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    arrays = write_mnist(root)
    data.load("mnist")
    cache = root / "gan-bench-cache" / "mnist-28"
    if damage == "truncate":
        path = cache / "train.npy"
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "reshape":
        np.save(cache / "test.npy", arrays["test"][:2, None])
    else:
        meta = json.loads((cache / "meta.json").read_text())
        (cache / "meta.json").write_text(json.dumps({**meta, "version": -1}))
    decodes = _counting(monkeypatch, torchvision.datasets.MNIST, "_load_data")
    _assert_mnist(data.load("mnist"), arrays)
    assert len(decodes) == 2
    assert np.array_equal(np.load(cache / "train.npy"), arrays["train"][:, None])
    assert json.loads((cache / "meta.json").read_text())["version"] == data_cache.REAL_CACHE_VERSION


def test_mnist_resized_from_the_native_images(root: Path) -> None:
    arrays = write_mnist(root)
    dataset = data.load("mnist", 16)
    assert dataset.train.shape == (N_TRAIN, 1, 16, 16)
    assert dataset.resize == "antialias"
    native = torch.from_numpy(arrays["test"]).float()[:, None]
    expected = torch.nn.functional.interpolate(native, size=(16, 16), mode="bilinear", antialias=True)
    assert (dataset.test.float() - expected).abs().max() <= 1
    assert (root / "gan-bench-cache" / "mnist-16" / "meta.json").is_file()


def test_missing_mnist_file_is_named(root: Path) -> None:
    write_mnist(root)
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.unlink()
    for call in (data.load, data.check_available):
        with pytest.raises(DatasetMissingError) as info:
            call("mnist")
        _assert_one_line(info.value, "'mnist'", "missing", path, "gan-bench prefetch", "GAN_BENCH_DATA")


def test_missing_data_root_is_named(root: Path) -> None:
    with pytest.raises(DatasetMissingError) as info:
        data.check_available("fashion_mnist")
    _assert_one_line(info.value, root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte", "gan-bench prefetch")


@pytest.mark.parametrize("damage", ["truncate", "magic", "count"])
def test_corrupt_mnist_file_is_named(root: Path, damage: str) -> None:
    arrays = write_mnist(root)
    raw = root / "MNIST" / "raw"
    path = raw / ("train-labels-idx1-ubyte" if damage == "count" else "train-images-idx3-ubyte")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "magic":
        path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])  # e.g. still gzipped
    else:
        path.write_bytes(_idx_bytes(arrays["train_labels"][:-1]))
    for call in (data.load, data.check_available):
        with pytest.raises(DatasetMissingError) as info:
            call("mnist")
        _assert_one_line(info.value, "'mnist'", "corrupt", path, "gan-bench prefetch")


def test_check_available(root: Path) -> None:
    data.check_available("digits")
    data.check_available("polygons", 16, seed=3)
    with pytest.raises(BenchError, match="n_trian"):
        data.check_available("polygons", n_trian=3)
    with pytest.raises(DatasetMissingError):
        data.check_available("mnist")
    write_mnist(root)
    data.check_available("mnist")
    data.check_available("mnist", 32)
    data.load("mnist")
    # A complete cache is enough, even once the raw files are gone; not at another size.
    for path in (root / "MNIST" / "raw").iterdir():
        path.unlink()
    data.check_available("mnist")
    data.load("mnist")
    with pytest.raises(DatasetMissingError):
        data.check_available("mnist", 32)


def test_data_root_is_read_at_call_time(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.data_root() == root
    monkeypatch.setenv("GAN_BENCH_DATA", str(tmp_path / "elsewhere"))
    assert data.data_root() == tmp_path / "elsewhere"
    write_mnist(tmp_path / "elsewhere")
    assert data.load("mnist").train.shape == (N_TRAIN, 1, 28, 28)
    monkeypatch.delenv("GAN_BENCH_DATA")
    assert data.data_root() == tmp_path / "cache" / "data"


def _fake_mnist_download(arrays: dict[str, np.ndarray], calls: list[str]) -> Callable[..., None]:
    """Stands in for torchvision's download_and_extract_archive: leaves the extracted file, as it would."""
    by_name = {filename: arrays[key] for key, filename in IDX_FILES.items()}

    def download_and_extract_archive(url: str, download_root: str, filename: str, md5: str) -> None:
        calls.append(url)
        Path(download_root, filename.removesuffix(".gz")).write_bytes(_idx_bytes(by_name[filename.removesuffix(".gz")]))

    return download_and_extract_archive


def test_fetch_downloads_through_torchvision_then_loads(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _mnist_arrays()
    calls: list[str] = []
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", _fake_mnist_download(arrays, calls))
    dataset = data.fetch("mnist")
    assert sorted(calls) == sorted(torchvision.datasets.MNIST.mirrors[0] + f + ".gz" for f in IDX_FILES.values())
    _assert_mnist(dataset, arrays)
    assert (root / "gan-bench-cache" / "mnist-28" / "meta.json").is_file()
    data.fetch("mnist")
    assert len(calls) == 4  # torchvision skips files that are there


def test_fetch_failure_is_one_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    with pytest.raises(BenchError) as info:
        data.fetch("mnist")
    _assert_one_line(info.value, "'mnist'", torchvision.datasets.MNIST.mirrors[0], root, "name resolution")


def test_fetch_of_offline_datasets_just_loads() -> None:
    assert data.fetch("polygons", 8, n_train=5, n_test=3).train.shape == (5, 1, 8, 8)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10: the python pickle batches under <root>/cifar-10-batches-py/


class _Py2Str(bytes):
    """A Python 2 `str`, as in the real CIFAR pickles: read back as str under encoding="latin1" (torchvision),
    as bytes under encoding="bytes"."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: _Py2Str) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2_str


def _py2_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10(root: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, labels = [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # R, G, B planes of 32×32, row-major
        rows[:, :1024] //= 2  # the channels differ, so a mixed-up channel order shows
        batch_labels = rng.integers(0, 10, per_batch).tolist()
        batch = {
            _Py2Str(b"batch_label"): _Py2Str(f"training batch {i + 1} of 5".encode()),
            _Py2Str(b"labels"): batch_labels,
            _Py2Str(b"data"): rows,
            _Py2Str(b"filenames"): [_Py2Str(f"image_{i}_{j}.png".encode()) for j in range(per_batch)],
        }
        _py2_pickle(folder / name, batch)
        images.append(rows.reshape(-1, 3, 32, 32))
        labels.append(np.array(batch_labels, dtype=np.int64))
    label_names = [_Py2Str(n) for n in (b"airplane", b"automobile", b"bird", b"cat", b"deer")]
    label_names += [_Py2Str(n) for n in (b"dog", b"frog", b"horse", b"ship", b"truck")]
    meta = {_Py2Str(b"num_cases_per_batch"): 10000, _Py2Str(b"label_names"): label_names, _Py2Str(b"num_vis"): 3072}
    _py2_pickle(folder / "batches.meta", meta)
    return {
        "train": np.concatenate(images[:5]),
        "train_labels": np.concatenate(labels[:5]),
        "test": images[5],
        "test_labels": labels[5],
    }


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture files cannot have the real files' md5 sums: torchvision's check then only looks for the file."""

    def check_integrity(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", check_integrity)
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", check_integrity)


def test_cifar10_pickles_use_python2_strings(root: Path) -> None:
    write_cifar10(root)
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert b"data" in pickle.load(f, encoding="bytes")  # as `pickle.load(f, encoding="bytes")` on the real files


def test_cifar10_pixels_labels_and_split_are_the_files(root: Path, no_md5: None) -> None:
    arrays = write_cifar10(root)
    dataset = _load_quietly("cifar10")
    assert dataset.name == "cifar10" and dataset.num_classes == 10 and dataset.image_shape == (3, 32, 32)
    assert dataset.resize == "none"
    assert dataset.train.shape == (15, 3, 32, 32) and dataset.test.shape == (3, 3, 32, 32)
    for key in data_cache.ARRAYS:
        assert np.array_equal(getattr(dataset, key).numpy(), arrays[key]), key
    assert dataset.train_labels.dtype == torch.int64
    assert (root / "gan-bench-cache" / "cifar10-32" / "meta.json").is_file()


def test_cifar10_checks_md5_sums_without_the_stub(root: Path) -> None:
    write_cifar10(root)
    with pytest.raises(DatasetMissingError) as info:
        data.check_available("cifar10")
    _assert_one_line(info.value, "corrupt", root / "cifar-10-batches-py" / "data_batch_1", "md5", "gan-bench prefetch")


def test_cifar10_missing_batch_is_named(root: Path, no_md5: None) -> None:
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / "test_batch"
    path.unlink()
    with pytest.raises(DatasetMissingError) as info:
        data.load("cifar10")
    _assert_one_line(info.value, "missing", path, "gan-bench prefetch")


# ---------------------------------------------------------------------------------------------------------------------
# CelebA: <root>/celeba/img_align_celeba/*.jpg and torchvision's txt files

CELEBA_PARTITIONS = [0, 0, 2, 0, 1, 0, 2, 0]  # 0 train, 1 valid, 2 test
ATTRIBUTES = ["5_o_Clock_Shadow", "Arched_Eyebrows"] + [f"Attribute_{i}" for i in range(38)]


def write_celeba(root: Path) -> list[Path]:
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_PARTITIONS))]
    y, x = np.mgrid[0:218, 0:178]
    for i, name in enumerate(names):
        # Smooth gradients that differ per channel and image, so JPEG keeps them and a shifted crop shows.
        pixels = np.stack([x * 1.2 + 10 * i, y * 1.1, (x + y) * 0.6 + 20 * i], axis=-1) % 256
        Image.fromarray(pixels.astype(np.uint8)).save(images / name, quality=95)
    count = f"{len(names)}\n"
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, CELEBA_PARTITIONS)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {rng.integers(1, 10000)}\n" for n in names))
    bbox = "".join(f"{n}    95  71 226 313\n" for n in names)
    (folder / "list_bbox_celeba.txt").write_text(count + "image_id x_1 y_1 width height\n" + bbox)
    landmarks = "".join(f"{n}  69 109 106 113  77 142  73 152 108 154\n" for n in names)
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(count + header + "\n" + landmarks)
    attributes = "".join(f"{n} " + " ".join(rng.choice(["-1", " 1"], len(ATTRIBUTES))) + "\n" for n in names)
    (folder / "list_attr_celeba.txt").write_text(count + " ".join(ATTRIBUTES) + " \n" + attributes)
    return [images / n for n in names]


def _pil_square(path: Path, size: int) -> np.ndarray:
    """The centred 160×160 crop of a 178×218 image, resized, computed with PIL alone."""
    image = Image.open(path).convert("RGB").crop((9, 29, 169, 189))
    if size != 160:
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1)


@pytest.mark.parametrize("size", [64, 160])
def test_celeba_partitions_crop_and_resize(root: Path, no_md5: None, size: int) -> None:
    paths = write_celeba(root)
    dataset = _load_quietly("celeba", size)
    train = [p for p, s in zip(paths, CELEBA_PARTITIONS) if s == 0]
    test = [p for p, s in zip(paths, CELEBA_PARTITIONS) if s == 2]
    assert dataset.train.shape == (len(train), 3, size, size) and dataset.test.shape == (len(test), 3, size, size)
    assert dataset.num_classes == 0
    assert dataset.resize == ("none" if size == 160 else "antialias")
    assert dataset.train_labels.tolist() == [0] * len(train) and dataset.test_labels.tolist() == [0] * len(test)
    for images, files in ((dataset.train, train), (dataset.test, test)):
        for image, path in zip(images.numpy(), files):
            assert np.abs(image.astype(int) - _pil_square(path, size)).max() <= 1, path
    assert (root / "gan-bench-cache" / f"celeba-{size}" / "meta.json").is_file()


def test_celeba_cache_is_reused(root: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba(root)
    decodes = _counting(monkeypatch, torchvision.datasets.folder, "pil_loader")
    first = data.load("celeba")
    assert len(decodes) == CELEBA_PARTITIONS.count(0) + CELEBA_PARTITIONS.count(2)  # not the validation partition
    second = data.load("celeba")
    assert len(decodes) == CELEBA_PARTITIONS.count(0) + CELEBA_PARTITIONS.count(2)
    assert torch.equal(first.train, second.train) and torch.equal(first.test, second.test)


def test_celeba_decoding_workers_give_the_same_images(
    root: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_celeba(root)
    here = data.load("celeba", 32)
    monkeypatch.setattr(data_images, "PARALLEL_MIN", 1)
    (root / "gan-bench-cache" / "celeba-32" / "meta.json").unlink()
    workers = data.load("celeba", 32)
    assert torch.equal(here.train, workers.train) and torch.equal(here.test, workers.test)


def test_celeba_missing_image_is_named_without_decoding(
    root: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_celeba(root)
    paths[3].unlink()
    paths[5].unlink()
    decodes = _counting(monkeypatch, torchvision.datasets.folder, "pil_loader")
    for call in (data.check_available, data.load):
        with pytest.raises(DatasetMissingError) as info:
            call("celeba")
        _assert_one_line(info.value, "missing", paths[3], "1 more", "gan-bench prefetch", "rate-limited")
        _assert_one_line(info.value, f"by hand under {root / 'celeba'}/")
    assert not decodes


def test_celeba_missing_txt_file_is_named(root: Path, no_md5: None) -> None:
    write_celeba(root)
    path = root / "celeba" / "list_eval_partition.txt"
    path.unlink()
    with pytest.raises(DatasetMissingError) as info:
        data.check_available("celeba")
    _assert_one_line(info.value, "missing", path, "gan-bench prefetch", "placed by hand")


def test_celeba_corrupt_image_is_named(root: Path, no_md5: None) -> None:
    paths = write_celeba(root)
    paths[2].write_bytes(paths[2].read_bytes()[:200])
    with pytest.raises(DatasetMissingError) as info:
        data.load("celeba")
    _assert_one_line(info.value, "corrupt", paths[2], "img_align_celeba.zip", "gan-bench prefetch")


# ---------------------------------------------------------------------------------------------------------------------
# the option resize: tf1_bilinear, compare_gan v1's resize of CelebA


def tf1_bilinear_reference(image: np.ndarray, size: int) -> np.ndarray:
    """TF1's tf.image.resize_images(image, [size, size]) of a C×H×W image, pixel by pixel in float64: bilinear,
    align_corners=False, legacy coordinates (output pixel i samples input coordinate i·in/out), no antialiasing."""
    channels, height, width = image.shape
    out = np.empty((channels, size, size))
    for i in range(size):
        y = i * height / size
        top, y_lerp = int(np.floor(y)), y - np.floor(y)
        bottom = min(top + 1, height - 1)
        for j in range(size):
            x = j * width / size
            left, x_lerp = int(np.floor(x)), x - np.floor(x)
            right = min(left + 1, width - 1)
            upper = image[:, top, left] + (image[:, top, right] - image[:, top, left]) * x_lerp
            lower = image[:, bottom, left] + (image[:, bottom, right] - image[:, bottom, left]) * x_lerp
            out[:, i, j] = upper + (lower - upper) * y_lerp
    return out


@pytest.mark.parametrize(("shape", "size"), [((3, 10, 10), 4), ((1, 10, 7), 4), ((3, 160, 160), 64), ((1, 5, 5), 8)])
def test_tf1_bilinear_is_tf1s_legacy_formula(shape: tuple[int, int, int], size: int) -> None:
    image = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    expected = tf1_bilinear_reference(image.astype(np.float64), size)
    height, width = shape[1:]
    matrices = data_images._tf1_bilinear_matrix(height, size), data_images._tf1_bilinear_matrix(width, size)
    floats = matrices[0] @ torch.from_numpy(image).float() @ matrices[1].T
    assert np.abs(floats.numpy() - expected).max() < 1e-3
    resized = data_images._resized(torch.from_numpy(image)[None], size, "tf1_bilinear")[0]
    assert resized.dtype == torch.uint8 and resized.shape == (shape[0], size, size)
    assert np.abs(resized.numpy() - expected).max() <= 0.5 + 1e-3  # rounded where v1 kept the floats


def test_celeba_tf1_bilinear_has_its_own_pixels_and_cache(
    root: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_celeba(root)
    default = _load_quietly("celeba")
    tf1 = _load_quietly("celeba", resize="tf1_bilinear")
    assert default.resize == "antialias" and tf1.resize == "tf1_bilinear"
    assert tf1.train.shape == default.train.shape and tf1.test.shape == default.test.shape == (2, 3, 64, 64)
    assert not torch.equal(tf1.train, default.train) and not torch.equal(tf1.test, default.test)
    test = [p for p, s in zip(paths, CELEBA_PARTITIONS) if s == 2]
    for image, path in zip(tf1.test.numpy(), test):
        expected = tf1_bilinear_reference(_pil_square(path, 160).astype(np.float64), 64)
        assert np.abs(image - expected).max() <= 0.5 + 1e-3, path

    caches = root / "gan-bench-cache"
    assert sorted(p.name for p in caches.iterdir()) == ["celeba-64", "celeba-64-tf1_bilinear"]
    assert json.loads((caches / "celeba-64-tf1_bilinear" / "meta.json").read_text())["resize"] == "tf1_bilinear"
    decodes = _counting(monkeypatch, torchvision.datasets.folder, "pil_loader")
    assert torch.equal(data.load("celeba", resize="tf1_bilinear").train, tf1.train)
    assert torch.equal(data.load("celeba").train, default.train)
    assert not decodes  # each from its own cache
    data.check_available("celeba", resize="tf1_bilinear")
    assert data.load("celeba", 160, resize="tf1_bilinear").resize == "none"  # the crop itself


def test_folder_tf1_bilinear_has_its_own_pixels_and_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    (tmp_path / "big" / "only").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "big" / "only" / f"{i}.png")
    default = data.load("folder", 8, path=tmp_path / "big")
    tf1 = data.load("folder", 8, path=tmp_path / "big", resize="tf1_bilinear")
    assert default.resize == "antialias" and tf1.resize == "tf1_bilinear"
    assert not torch.equal(tf1.train, default.train)
    names = sorted(p.name for p in (tmp_path / "cache" / "datasets").iterdir())
    assert len(names) == 2 and names[1] == names[0] + "-tf1_bilinear" and names[0].endswith("-8")


def test_resize_option_is_checked(root: Path, tmp_path: Path, no_md5: None) -> None:
    write_celeba(root)
    write_folder(tmp_path / "pets")
    data.check_options("celeba", {"resize": "tf1_bilinear"})
    data.check_options("folder", {"resize": "antialias"})
    with pytest.raises(BenchError, match="unknown option 'resize' for dataset 'mnist'"):
        data.check_options("mnist", {"resize": "tf1_bilinear"})
    for name, options in (("celeba", {}), ("folder", {"path": tmp_path / "pets"})):
        for call in (data.load, data.check_available, data.fetch):  # fetch: before any download
            with pytest.raises(BenchError) as info:
                call(name, resize="bicubic", **options)
            _assert_one_line(info.value, "option resize", f"'{name}'", "antialias, tf1_bilinear", "'bicubic'")


# ---------------------------------------------------------------------------------------------------------------------
# folder: an ImageFolder tree of PNGs


def write_folder(path: Path, per_class: int = 4) -> dict[Path, tuple[np.ndarray, int]]:
    """8×8 RGB PNGs in classes "cat" and "dog": {file: (3×8×8 pixels, class index)}."""
    rng = np.random.default_rng(3)
    images = {}
    for label, name in enumerate(["cat", "dog"]):
        (path / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            file = path / name / f"{i}.png"
            Image.fromarray(pixels).save(file)
            images[file] = (pixels.transpose(2, 0, 1), label)
    return images


def _rows(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[bytes, int]]:
    return [(image.numpy().tobytes(), int(label)) for image, label in zip(images, labels)]


def test_folder_pixels_labels_and_seeded_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_folder(tmp_path / "pets")
    dataset = _load_quietly("folder", 8, path=str(tmp_path / "pets"), test_fraction=0.25)
    assert dataset.name == "folder" and dataset.num_classes == 2 and dataset.image_shape == (3, 8, 8)
    assert len(dataset.train) == 6 and len(dataset.test) == 2
    expected = sorted((pixels.tobytes(), label) for pixels, label in images.values())
    rows = _rows(dataset.train, dataset.train_labels) + _rows(dataset.test, dataset.test_labels)
    assert sorted(rows) == expected
    # The same split from scratch, and from the cache.
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "other-cache"))
    again = data.load("folder", 8, path=tmp_path / "pets", test_fraction=0.25)
    assert _rows(again.test, again.test_labels) == _rows(dataset.test, dataset.test_labels)
    cached = data.load("folder", 8, path=tmp_path / "pets", test_fraction=0.25)
    assert torch.equal(cached.train, dataset.train) and torch.equal(cached.train_labels, dataset.train_labels)
    assert data.load("folder", 8, path=tmp_path / "pets").test.shape == (1, 3, 8, 8)  # default test_fraction 0.1


def test_folder_crops_a_centred_square_to_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "shapes"
    (folder / "only").mkdir(parents=True)
    rng = np.random.default_rng(4)
    wide = rng.integers(0, 256, (10, 16, 3), dtype=np.uint8)
    Image.fromarray(wide).save(folder / "only" / "a-wide.png")
    gray = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(gray).save(folder / "only" / "b-gray.bmp")
    dataset = data.load("folder", 8, path=folder, test_fraction=0.5)
    assert dataset.num_classes == 1 and dataset.image_shape == (3, 8, 8)
    # One image in each split; the gray one has equal channels.
    wide_image, gray_image = torch.cat([dataset.train, dataset.test]).numpy().astype(int)
    if (wide_image[0] == wide_image[1]).all():
        wide_image, gray_image = gray_image, wide_image
    expected_wide = np.asarray(Image.fromarray(wide[:, 3:13]).resize((8, 8), Image.BILINEAR)).transpose(2, 0, 1)
    expected_gray = np.asarray(Image.fromarray(gray).resize((8, 8), Image.BILINEAR))
    assert np.abs(wide_image - expected_wide).max() <= 1
    assert all(np.abs(channel - expected_gray).max() <= 1 for channel in gray_image)


def test_folder_cache_follows_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_folder(tmp_path / "pets")
    decodes = _counting(monkeypatch, torchvision.datasets.folder, "pil_loader")
    data.load("folder", 8, path=tmp_path / "pets")
    assert len(decodes) == 8
    data.load("folder", 8, path=tmp_path / "pets")
    assert len(decodes) == 8
    datasets = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(datasets) == 1 and datasets[0].name.startswith("folder-") and datasets[0].name.endswith("-8")
    # A changed file is a changed dataset.
    file = next(iter(images))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(file)
    os.utime(file, ns=(1, 1))
    changed = data.load("folder", 8, path=tmp_path / "pets")
    assert len(decodes) == 16
    assert (torch.cat([changed.train, changed.test]) == 0).flatten(1).all(1).sum() == 1


def test_folder_errors(tmp_path: Path) -> None:
    for call in (data.load, data.check_available):
        with pytest.raises(BenchError, match="needs the option path"):
            call("folder")
    (tmp_path / "file.png").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-images" / "cat").mkdir(parents=True)
    (tmp_path / "no-images" / "cat" / "notes.txt").write_text("")
    (tmp_path / "single" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "single" / "cat" / "0.png")
    for path, words in [
        (tmp_path / "nowhere", ["does not exist"]),
        (tmp_path / "file.png", ["is not a directory"]),
        (tmp_path / "empty", ["class folder"]),
        (tmp_path / "no-images", ["no valid file", "cat"]),
        (tmp_path / "single", ["single image"]),
    ]:
        for call in (data.load, data.check_available):
            with pytest.raises(DatasetMissingError) as info:
                call("folder", path=path)
            _assert_one_line(info.value, "'folder'", path, *words)
    write_folder(tmp_path / "pets")
    with pytest.raises(BenchError, match="test_fraction"):
        data.check_available("folder", path=tmp_path / "pets", test_fraction=1.5)


def test_folder_corrupt_image_is_named(tmp_path: Path) -> None:
    images = write_folder(tmp_path / "pets")
    file = next(iter(images))
    file.write_bytes(file.read_bytes()[:30])
    with pytest.raises(DatasetMissingError) as info:
        data.load("folder", 8, path=tmp_path / "pets")
    _assert_one_line(info.value, "'folder'", file, "repair or remove it")
