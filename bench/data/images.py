"""Resizing uint8 images, and decoding image files: decoded, centre-cropped and resized in worker processes."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

from bench import BenchError

# ---------------------------------------------------------------------------------------------------------------------
# resizing

# The values of the option resize of the datasets that resize photos (celeba, folder), the default first:
# - antialias: bilinear with antialiasing, as Pillow resizes;
# - tf1_bilinear: what compare_gan v1 did to CelebA, TF1's tf.image.resize_images(image, [64, 64])
#   (gan_lib.py lines 88-90): bilinear without antialiasing, in TF1's legacy coordinates.
RESIZES = ("antialias", "tf1_bilinear")
DEFAULT_RESIZE = RESIZES[0]
NO_RESIZE = "none"  # Dataset.resize of images left at their native size


def _check_resize(dataset: str, value: Any) -> str:
    if value not in RESIZES:
        raise BenchError(f"option resize of dataset {dataset!r} must be one of {', '.join(RESIZES)}, got {value!r}")
    return value


@functools.lru_cache(maxsize=8)
def _tf1_bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """The out_size×in_size float32 matrix W of TF1's legacy bilinear resize along one axis: out = W · in.

    TF1's resize_bilinear with align_corners=False and no half-pixel centres samples output pixel i at input
    coordinate x = i · in_size / out_size (not (i + ½) · in_size / out_size − ½), interpolating between pixels
    floor(x) and min(floor(x) + 1, in_size − 1): the image shifts towards the top left, and a downscale by more
    than 2 skips input pixels, as it has no antialiasing. (W · img · Wᵀ matched tf.compat.v1.image.resize_images
    of TF 2.21 bit for bit, 160→64, 218×178→64 and 5→8 among others.)
    """
    # In float32, as TF's kernel computes the scale and the coordinates (resize_bilinear_op.cc).
    x = torch.arange(out_size, dtype=torch.float32) * torch.tensor(in_size / out_size, dtype=torch.float32)
    low = x.floor()
    fraction = x - low
    low = low.long()
    high = (low + 1).clamp(max=in_size - 1)
    rows = torch.arange(out_size)
    matrix = torch.zeros(out_size, in_size)
    # Accumulated, because at the last input pixel low and high are the same column.
    matrix.index_put_((rows, low), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix


def _tf1_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images N×C×H×W resized to size×size as TF1's tf.image.resize_images did by default."""
    height, width = images.shape[-2:]
    resized = _tf1_bilinear_matrix(height, size) @ images.float() @ _tf1_bilinear_matrix(width, size).T
    # v1 kept these floats (gan_lib.py line 91 only divides them by 255); rounding them to uint8, as every dataset
    # here is stored, moves each by at most 0.5/255. Each is a convex combination of pixels: no clamping needed.
    return resized.round().to(torch.uint8)


def _resized(images: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """uint8 images N×C×H×W resized to size×size by method `resize` (one of RESIZES), contiguous.

    For antialias, torch's uint8 path (fixed-point, as Pillow's) is within one gray level of resizing as floats,
    and several times faster, which matters for CelebA's 200k images.
    """
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    if resize == "tf1_bilinear":
        return _tf1_bilinear(images, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# ---------------------------------------------------------------------------------------------------------------------
# image files: decoded, centre-cropped and resized in worker processes

# Worker processes, as threads would mostly wait for the GIL: two halved JPEG decoding time on two idle cores.
DECODE_WORKERS = 2
PARALLEL_MIN = 1000  # for fewer images, starting the workers costs about as much as they save
DECODE_BATCH = 64


class _UnreadableImage(Exception):
    """An image file that cannot be decoded; each dataset words its own error for it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason


def _square_image(path: Path, crop: int | None, size: int, resize: str) -> torch.Tensor:
    """The RGB image at `path`, uint8 3×size×size: its centred crop×crop square (None: the largest), resized by
    method `resize`."""
    # PIL, as ImageFolder and CelebA read images: torchvision.io's decoders are deprecated since torchvision 0.29.
    image = torchvision.transforms.functional.pil_to_tensor(torchvision.datasets.folder.pil_loader(path))
    height, width = image.shape[1:]
    side = min(height, width) if crop is None else crop
    if side > min(height, width):
        raise ValueError(f"it is {width}×{height}, smaller than the {crop}×{crop} crop")
    image = torchvision.transforms.functional.center_crop(image, [side, side])
    return _resized(image[None], size, resize)[0]


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as squares; an unreadable file gives an _UnreadableImage, passed on rather than raised
    because DataLoader workers re-raise exceptions with the traceback in the message."""

    def __init__(self, paths: list[Path], crop: int | None, size: int, resize: str) -> None:
        self.paths, self.crop, self.size, self.resize = paths, crop, size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | _UnreadableImage:
        path = self.paths[index]
        try:
            return _square_image(path, self.crop, self.size, self.resize)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            return _UnreadableImage(path, " ".join(str(error).split()))


def _stack(items: list[torch.Tensor | _UnreadableImage]) -> torch.Tensor | _UnreadableImage:
    bad = [item for item in items if isinstance(item, _UnreadableImage)]
    return bad[0] if bad else torch.stack(items)


def _decode_images(paths: list[Path], crop: int | None, size: int, resize: str, description: str) -> np.ndarray:
    """uint8 N×3×size×size squares of the image files, resized by method `resize`; raises _UnreadableImage for the
    first bad one."""
    files = _ImageFiles(paths, crop, size, resize)
    workers = DECODE_WORKERS if len(paths) >= PARALLEL_MIN else 0
    batches = torch.utils.data.DataLoader(files, batch_size=DECODE_BATCH, num_workers=workers, collate_fn=_stack)
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    done = 0
    # One image's crop and resize is too small to share among threads, which then only contend: on two busy
    # cores, two threads made it 5-10× slower. (DataLoader workers run with one thread each anyway.)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(total=len(paths), desc=description, unit="image", disable=not sys.stderr.isatty()) as bar:
            for batch in batches:
                if isinstance(batch, _UnreadableImage):
                    raise batch
                images[done : done + len(batch)] = batch.numpy()
                done += len(batch)
                bar.update(len(batch))
    finally:
        torch.set_num_threads(threads)
    return images

