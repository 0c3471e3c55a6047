"""Resizing uint8 images, and decoding image files: decoded, centre-cropped and resized in worker processes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

# ---------------------------------------------------------------------------------------------------------------------
# resizing


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images N×C×H×W resized to size×size (bilinear, antialiased), contiguous.

    torch's uint8 path (fixed-point, as Pillow's) is within one gray level of resizing as floats, and several
    times faster, which matters for CelebA's 200k images.
    """
    if images.shape[-2:] == (size, size):
        return images.contiguous()
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


def _square_image(path: Path, crop: int | None, size: int) -> torch.Tensor:
    """The RGB image at `path`, uint8 3×size×size: its centred crop×crop square (None: the largest), resized."""
    # PIL, as ImageFolder and CelebA read images: torchvision.io's decoders are deprecated since torchvision 0.29.
    image = torchvision.transforms.functional.pil_to_tensor(torchvision.datasets.folder.pil_loader(path))
    height, width = image.shape[1:]
    side = min(height, width) if crop is None else crop
    if side > min(height, width):
        raise ValueError(f"it is {width}×{height}, smaller than the {crop}×{crop} crop")
    image = torchvision.transforms.functional.center_crop(image, [side, side])
    return _resized(image[None], size)[0]


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as squares; an unreadable file gives an _UnreadableImage, passed on rather than raised
    because DataLoader workers re-raise exceptions with the traceback in the message."""

    def __init__(self, paths: list[Path], crop: int | None, size: int) -> None:
        self.paths, self.crop, self.size = paths, crop, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | _UnreadableImage:
        path = self.paths[index]
        try:
            return _square_image(path, self.crop, self.size)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            return _UnreadableImage(path, " ".join(str(error).split()))


def _stack(items: list[torch.Tensor | _UnreadableImage]) -> torch.Tensor | _UnreadableImage:
    bad = [item for item in items if isinstance(item, _UnreadableImage)]
    return bad[0] if bad else torch.stack(items)


def _decode_images(paths: list[Path], crop: int | None, size: int, description: str) -> np.ndarray:
    """uint8 N×3×size×size squares of the image files; raises _UnreadableImage for the first bad one."""
    files = _ImageFiles(paths, crop, size)
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

