"""CelebA's FID reference set: compare_gan v1 scored against the first 10,000 records of t2t's image_celeba_tune dev
shards, i.e. the validation partition in the order t2t wrote and shuffled it (bench.data.torchvision_sets)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from bench import BenchError, data
from bench.data.torchvision_sets import ReferenceDataset, v1_validation_order
from bench.metrics import MetricsConfig, Scorer, protocol_id
from bench.study import load_study

# What Python 2.7.18 gives for t2t 1.4.2's generate_files (round robin over 100 train and 10 dev shards) and
# shuffle_dataset (random.shuffle of each shard, train first) after random.seed(429459), on CelebA's 162,770 train and
# 19,867 validation images: the positions (0-based rows of list_eval_partition.txt) of the first 20 of v1's 10,000, and
# sha1 digests of the comma-joined positions of the first 10,000 and of all 19,867.
V1_FIRST_20 = [169650, 164270, 175340, 164360, 166280, 164610, 174360, 169600, 180180, 169080, 177680, 165910, 178750,
               166850, 169920, 178900, 175680, 178300, 181110, 173470]
V1_SHA1_10000 = "5242e7e06c978dcb0405cf6cac434f1b2b7390e4"
V1_SHA1_ALL = "dcbc72dae432bc2bb490e95dc2f36c11a9cb0d71"
CELEBA_TRAIN, CELEBA_VALID = 162_770, 19_867

# The small file: rows in CelebA's layout (train, then validation, then test), and what the same Python 2 run gives
# for 103 train and 23 validation images: the rows of the validation images in v1's order.
N_TRAIN, N_VALID, N_TEST = 103, 23, 10
SMALL_V1_ROWS = [123, 103, 113, 114, 124, 104, 125, 105, 115, 106, 116, 107, 117, 118, 108, 109, 119, 120, 110, 121, 111,
                 122, 112]


def _digest(rows: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, rows)).encode()).hexdigest()


def test_v1_order_is_t2ts_under_python_2() -> None:
    rows = [CELEBA_TRAIN + i for i in v1_validation_order(CELEBA_TRAIN, CELEBA_VALID)]
    assert sorted(rows) == list(range(CELEBA_TRAIN, CELEBA_TRAIN + CELEBA_VALID))  # every validation image, once
    assert rows[:20] == V1_FIRST_20
    assert _digest(rows[:10_000]) == V1_SHA1_10000 and _digest(rows) == V1_SHA1_ALL
    # v1's 10,000: dev shards 0-4 whole (1,987 each, the images whose position is 0-4 mod 10), then 65 of shard 5.
    shards = [(row - CELEBA_TRAIN) % 10 for row in rows[:10_000]]
    assert shards == sorted(shards) and shards.count(5) == 65


@pytest.fixture
def celeba(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """<data root>/celeba as torchvision reads it, each image a flat grey whose level is its row."""
    monkeypatch.setenv("GAN_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GAN_BENCH_DATA", str(tmp_path / "data"))
    # The files cannot have the real ones' md5 sums: torchvision's check then only looks for the file.
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    folder = tmp_path / "data" / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    partitions = [0] * N_TRAIN + [1] * N_VALID + [2] * N_TEST
    names = [f"{row + 1:06d}.jpg" for row in range(len(partitions))]
    for row, name in enumerate(names):
        Image.new("RGB", (178, 218), (row,) * 3).save(folder / "img_align_celeba" / name, quality=95)
    count = f"{len(names)}\n"
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partitions)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    (folder / "list_bbox_celeba.txt").write_text(count + "image_id x_1 y_1 width height\n" +
                                                  "".join(f"{n} 95 71 226 313\n" for n in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(count + "lefteye_x lefteye_y\n" +
                                                             "".join(f"{n} 69 109\n" for n in names))
    (folder / "list_attr_celeba.txt").write_text(count + "Smiling\n" + "".join(f"{n} 1\n" for n in names))
    return tmp_path / "data"


def _rows(images: torch.Tensor) -> list[int]:
    """The row of each flat image: its grey level (which JPEG keeps, having no colour to subsample)."""
    return [round(level) for level in images.float().mean(dim=(1, 2, 3)).tolist()]


def test_validation_reference_is_v1s_rows_in_v1s_order(celeba: Path) -> None:
    dataset = data.load("celeba", 16, reference_split="validation")
    assert [N_TRAIN + i for i in v1_validation_order(N_TRAIN, N_VALID)] == SMALL_V1_ROWS
    assert _rows(dataset.test) == SMALL_V1_ROWS  # what FID scores against: its first metrics.num_real
    assert _rows(dataset.train) == list(range(N_TRAIN))
    assert isinstance(dataset, ReferenceDataset) and dataset.real_split == "validation"
    meta = json.loads((celeba / "gan-bench-cache" / "celeba-16-validation" / "meta.json").read_text())
    assert meta["reference_split"] == "validation"
    data.check_available("celeba", 16, reference_split="validation")


def test_the_default_reference_is_the_test_partition_with_a_cache_of_its_own(celeba: Path) -> None:
    default = data.load("celeba", 16)
    assert _rows(default.test) == list(range(N_TRAIN + N_VALID, N_TRAIN + N_VALID + N_TEST))
    assert default.real_split == "test"
    caches = sorted(p.name for p in (celeba / "gan-bench-cache").iterdir() if p.is_dir())
    assert caches == ["celeba-16"]  # as before the option: caches made then stay valid
    assert "reference_split" not in json.loads((celeba / "gan-bench-cache" / "celeba-16" / "meta.json").read_text())


def test_an_unknown_reference_split_is_one_line(celeba: Path) -> None:
    for call in (data.load, data.check_available):
        with pytest.raises(BenchError, match="^option reference_split of dataset 'celeba' must be one of test, "
                                             "validation, got 'valid'$"):
            call("celeba", 16, reference_split="valid")


def test_the_protocol_names_the_reference_split(celeba: Path, tmp_path: Path) -> None:
    # A Scorer reads its Inception weights only at its first evaluation; until then any state_dict will do.
    weights = tmp_path / "inception.pth"
    torch.save({"weight": torch.zeros(1)}, weights)
    config = MetricsConfig(extractor="inception", inception_weights=weights, num_real=N_TEST)
    protocols = {split: Scorer(config, data.load("celeba", 16, reference_split=split), torch.device("cpu")).protocol
                 for split in ("test", "validation")}
    assert {split: p["real_split"] for split, p in protocols.items()} == {"test": "test", "validation": "validation"}
    assert f"real=validation:{N_TEST}" in protocol_id(protocols["validation"])
    assert protocol_id(protocols["validation"]) != protocol_id(protocols["test"])  # never compared with each other


@pytest.mark.parametrize("name", ["are_gans_equal", "are_gans_equal_narrow"])
def test_the_paper_studies_score_celeba_against_v1s_reference(name: str) -> None:
    assert load_study(f"studies/{name}.yaml").dataset_options["celeba"] == {"resize": "tf1_bilinear",
                                                                             "reference_split": "validation"}
