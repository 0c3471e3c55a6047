from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull
from sklearn.datasets import load_digits

from bench import BenchError, data
from bench.data import generated
from bench.registry import UnknownName

SMALL = {"n_train": 300, "n_test": 100}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def polygons() -> data.Dataset:
    return data.load("polygons", **SMALL)


def _assert_same(a: data.Dataset, b: data.Dataset) -> None:
    for field in ("train", "test", "train_labels", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def _rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


# registry and errors


def test_registry_lists_both_datasets_with_one_line_descriptions() -> None:
    assert {"digits", "polygons"} <= set(data.DATASETS.names())
    for name in ("digits", "polygons"):
        text = data.DATASETS.description(name)
        assert text and "\n" not in text
    assert data.default_size("digits") == 16
    assert data.default_size("polygons") == 28


def test_unknown_dataset_is_one_line_listing_valid_names() -> None:
    with pytest.raises(UnknownName) as info:
        data.load("mnistt")
    message = str(info.value)
    assert "mnistt" in message and "digits" in message and "polygons" in message
    assert "\n" not in message
    assert isinstance(info.value, BenchError)
    with pytest.raises(UnknownName):
        data.default_size("mnistt")


@pytest.mark.parametrize("size", [0, 7, -16, "x", 16.0, True])
def test_bad_image_size(size: object) -> None:
    with pytest.raises(BenchError, match="image_size"):
        data.load("digits", size)


@pytest.mark.parametrize("name", ["digits", "polygons"])
def test_unknown_option_is_named(name: str) -> None:
    with pytest.raises(BenchError, match="n_trian"):
        data.load(name, n_trian=10)


def test_bad_option_value_is_named() -> None:
    with pytest.raises(BenchError, match="n_train"):
        data.load("polygons", n_train=0)


def test_register_in_a_module_of_ones_own_makes_a_custom_dataset(tmp_path, monkeypatch) -> None:
    """Outside bench.data, @register marks the loader: a study names it package.module:function, its options are
    checked as a built-in's, and the registry's list of names is left as it was."""
    (tmp_path / "gb_tiny_data.py").write_text(
        "import torch\nfrom bench.data import Dataset, register\n\n"
        "@register('tiny', 8, 'a test dataset', channels=3)\n"
        "def tiny(image_size, *, flavour='plain'):\n"
        "    images = torch.full((2, 3, image_size, image_size), len(flavour), dtype=torch.uint8)\n"
        "    labels = torch.zeros(2, dtype=torch.int64)\n"
        "    return Dataset('tiny', images, images, labels, labels, num_classes=1, resize='none')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = data.DATASETS.names()
    loaded = data.load("gb_tiny_data:tiny", flavour="salty")
    assert loaded.image_shape == (3, 8, 8) and loaded.train[0, 0, 0, 0] == 5
    assert data.channels("gb_tiny_data:tiny") == 3 and data.default_size("gb_tiny_data:tiny") == 8
    assert data.DATASETS.names() == names
    with pytest.raises(BenchError, match="unknown option 'colour' for dataset 'gb_tiny_data:tiny'; valid: flavour"):
        data.load("gb_tiny_data:tiny", colour="red")
    with pytest.raises(BenchError, match="custom dataset 'gb_tiny_data:torch': decorate its loader"):
        data.load("gb_tiny_data:torch")


# digits


def test_digits_shapes_and_split() -> None:
    d = data.load("digits")
    assert d.name == "digits" and d.num_classes == 10
    assert d.train.shape == (1437, 1, 16, 16) and d.test.shape == (360, 1, 16, 16)
    assert d.image_shape == (1, 16, 16)
    assert d.train.dtype == torch.uint8 and d.test.dtype == torch.uint8
    assert d.train_labels.dtype == torch.int64 and d.train_labels.shape == (1437,)
    assert d.test_labels.dtype == torch.int64 and d.test_labels.shape == (360,)
    assert set(d.train_labels.tolist()) == set(range(10)) == set(d.test_labels.tolist())
    assert d.train.max() > 200 and d.train.min() == 0
    assert d.resize == "antialias"  # from 8×8


def test_digits_split_is_a_partition_of_the_originals() -> None:
    # At 8×8 the resize is the identity, so train + test must hold every original (image, label) exactly once.
    d = data.load("digits", 8)
    assert d.resize == "none"
    bunch = load_digits()
    originals = np.round(bunch.images / 16 * 255).astype(np.uint8)
    expected = sorted((image.tobytes(), int(label)) for image, label in zip(originals, bunch.target))
    images = torch.cat([d.train, d.test]).numpy()
    labels = torch.cat([d.train_labels, d.test_labels]).tolist()
    assert sorted((image[0].tobytes(), label) for image, label in zip(images, labels)) == expected


def test_digits_resize_and_determinism() -> None:
    d = data.load("digits", 28)
    assert d.train.shape == (1437, 1, 28, 28) and d.test.shape == (360, 1, 28, 28)
    assert d.train.max() > 200
    _assert_same(data.load("digits", 28), d)
    # The split does not depend on the size: the same digits, in the same order.
    assert torch.equal(data.load("digits", 16).test_labels, d.test_labels)


# polygons


def test_polygons_shapes_labels_and_determinism(polygons: data.Dataset) -> None:
    assert polygons.name == "polygons" and polygons.num_classes == 6
    assert polygons.resize == "none"  # rasterised at the size asked for
    assert polygons.train.shape == (300, 1, 28, 28) and polygons.test.shape == (100, 1, 28, 28)
    assert polygons.train.dtype == torch.uint8 and polygons.train_labels.dtype == torch.int64
    assert polygons.test_labels.shape == (100,)
    assert set(polygons.train_labels.tolist()) == set(range(6))
    assert 0 <= polygons.test_labels.min() and polygons.test_labels.max() <= 5
    assert not _rows(polygons.train) & _rows(polygons.test)
    images, labels = generated.make_polygons(50, 28, np.random.default_rng(0))
    again, labels_again = generated.make_polygons(50, 28, np.random.default_rng(0))
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)


def test_polygons_seed_changes_the_data(polygons: data.Dataset) -> None:
    other = data.load("polygons", seed=1, **SMALL)
    assert not _rows(polygons.train) & _rows(other.train)


def test_polygons_do_not_depend_on_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = generated.make_polygons(40, 20, np.random.default_rng(3))
    monkeypatch.setattr(generated, "CHUNK", 7)
    chunked, chunked_labels = generated.make_polygons(40, 20, np.random.default_rng(3))
    assert images.shape == (40, 1, 20, 20) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images, chunked) and np.array_equal(labels, chunked_labels)


def test_polygons_are_bright_shapes_inside_a_black_border(polygons: data.Dataset) -> None:
    images = polygons.train[:, 0].numpy()
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert border.max() == 0
    assert (images.max(axis=(1, 2)) == 255).all()
    assert ((images > 127).sum(axis=(1, 2)) >= 20).all()


def test_polygons_are_antialiased(polygons: data.Dataset) -> None:
    images = polygons.train.numpy()
    gray = ((images > 0) & (images < 255)).sum(axis=(1, 2, 3))
    assert (gray >= 5).all()


def test_polygons_are_convex(polygons: data.Dataset) -> None:
    size = polygons.image_shape[1]
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1).reshape(-1, 2)
    for image in polygons.train[:, 0].numpy():
        mask = (image > 127).reshape(-1)
        hull = ConvexHull(grid[mask])
        in_hull = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
        # Thresholding the gray edge may leave a notch of a pixel or two, never more.
        assert (in_hull & ~mask).sum() <= 2
        assert mask.sum() / in_hull.sum() > 0.95


def test_polygons_labels_match_the_shapes(polygons: data.Dataset) -> None:
    # Polygons on the same ellipses cover more of them with more vertices: a label/image mix-up breaks this.
    area = (polygons.train[:, 0] > 127).sum(dim=(1, 2)).double()
    labels = polygons.train_labels
    means = [area[labels == label].mean().item() for label in range(6)]
    assert means[0] < means[2] < means[5]
    assert means[0] < 0.7 * means[5]


def test_polygon_vertices_are_convex_counter_clockwise_and_spread_out() -> None:
    # The rasteriser intersects half-planes, which hides vertex-order bugs, so check the geometry itself.
    k, vertices = generated._polygon_vertices(2000, np.random.default_rng(1))
    assert set(k.tolist()) == set(range(3, 9))
    assert np.linalg.norm(vertices, axis=-1).max() <= generated.EXTENT
    for count, polygon in zip(k, vertices):
        assert (polygon[count:] == polygon[0]).all()
        corners = polygon[:count]
        edges = np.roll(corners, -1, axis=0) - corners
        turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
        assert (turns > 0).all()
        assert np.linalg.norm(edges, axis=1).min() > 0.2  # no near-merged vertices


def test_rasteriser_gives_exact_coverage() -> None:
    # A counter-clockwise square from (2.5, 2) to (5.5, 6), padded to 8 vertices by repeating the first.
    square = np.array([[2.5, 2], [5.5, 2], [5.5, 6], [2.5, 6]] + [[2.5, 2]] * 4)[None]
    image = generated._rasterise(square, 8)[0]
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[2:6, 3:5] = 255
    expected[2:6, [2, 5]] = 128  # half of each pixel's sub-samples
    assert np.array_equal(image, expected)


def test_polygons_cache_is_written_and_reused(
    polygons: data.Dataset, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = cache / "datasets" / "polygons-s28-seed0-n300-100"
    assert {"train.npy", "train_labels.npy", "test.npy", "test_labels.npy"} <= {p.name for p in directory.iterdir()}

    def fail(*args: object) -> None:
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(generated, "make_polygons", fail)
    _assert_same(data.load("polygons", **SMALL), polygons)


@pytest.mark.parametrize("damage", ["truncate", "reshape"])
def test_polygons_damaged_cache_is_regenerated(polygons: data.Dataset, cache: Path, damage: str) -> None:
    path = cache / "datasets" / "polygons-s28-seed0-n300-100" / "train.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        np.save(path, polygons.train.numpy()[:10])
    _assert_same(data.load("polygons", **SMALL), polygons)
    assert np.array_equal(np.load(path), polygons.train.numpy())
