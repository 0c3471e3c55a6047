"""Loading a real dataset: the first load (decoding the raw files, building the uint8 cache) against a later one.

Run from the repository root:

    PYTHONPATH=. python benchmarks/data_loading.py [--image-size 28] [--repeats 3]

It writes an MNIST-sized fixture in a temporary data root: 60,000 + 10,000 random 28×28 images and their labels as
the uncompressed IDX files torchvision's MNIST class reads (<root>/MNIST/raw/train-images-idx3-ubyte etc.). There
is no checksum to bypass: torchvision keeps md5 sums only for the downloaded .gz archives, not the extracted files.

Then, in this process, it times `bench.data.load("mnist", image_size)`:
- the first load: checking the IDX headers, decoding through torchvision.datasets.MNIST, resizing if image_size is
  not 28, and writing the .npy cache under <root>/gan-bench-cache/mnist-<size>/;
- later loads (the median of --repeats), which memory-map that cache: they read only the .npy headers, and the
  pages come in when the tensors are first read. That first full read (a copy of each split) is timed separately;
  the files were just written, so it comes from the page cache, not the disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import data

N_TRAIN, N_TEST = 60000, 10000


def write_idx(path: Path, array: np.ndarray) -> None:
    # Magic number: two zero bytes, 8 for uint8, the number of dimensions; then each dimension, big-endian.
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def write_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3, help="later loads to time (their median is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GAN_BENCH_DATA"] = str(Path(tmp) / "data")
        os.environ["GAN_BENCH_CACHE"] = str(Path(tmp) / "cache")  # both are read at call time

        start = time.perf_counter()
        write_mnist(data.data_root())
        seconds = time.perf_counter() - start
        print(f"fixture: {N_TRAIN:,} + {N_TEST:,} random 28×28 images as IDX files, written in {seconds:.2f} s")

        start = time.perf_counter()
        first = data.load("mnist", args.image_size)
        first_seconds = time.perf_counter() - start

        later_seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            later = data.load("mnist", args.image_size)
            later_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        copies = later.train.clone(), later.test.clone()
        read_seconds = time.perf_counter() - start

        assert torch.equal(copies[0], first.train) and torch.equal(copies[1], first.test)
        print(f"shapes: train {tuple(later.train.shape)} {later.train.dtype}, test {tuple(later.test.shape)}, "
              f"labels {tuple(later.train_labels.shape)} / {tuple(later.test_labels.shape)} {later.train_labels.dtype}")
        print(f"first load (decode + cache build): {first_seconds:.3f} s")
        print(f"later load (from the cache, memory-mapped): {statistics.median(later_seconds):.4f} s "
              f"(median of {args.repeats}: {', '.join(f'{s:.4f}' for s in later_seconds)})")
        print(f"first full read of the later load's pixels (a copy of each split): {read_seconds:.3f} s")


if __name__ == "__main__":
    main()
