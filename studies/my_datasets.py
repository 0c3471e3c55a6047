"""A dataset of one's own, as README "Extending gan-bench" shows: `my_datasets:rings` in a study beside it."""

import torch

from bench.data import Dataset, register


@register("rings", default_size=16, description="rings of four radii, drawn from a seed", channels=1)
def rings(image_size: int, *, count: int = 1200, seed: int = 0) -> Dataset:
    """`count` images of one ring each, its radius one of four (the class, which the domain extractor behind FID
    learns), its centre random; five sixths train, the rest test. Keyword-only arguments are the dataset's options."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(4, (count,), generator=generator)
    centres = torch.rand(count, 2, 1, 1, generator=generator) * 0.4 + 0.3
    radii = (0.1 + 0.06 * labels).view(-1, 1, 1)
    grid = (torch.arange(image_size) + 0.5) / image_size
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    distance = ((x - centres[:, 0]) ** 2 + (y - centres[:, 1]) ** 2).sqrt()
    images = ((distance - radii).abs() < 1.5 / image_size).to(torch.uint8).mul(255).unsqueeze(1)
    split = count * 5 // 6
    return Dataset("rings", images[:split], images[split:], labels[:split], labels[split:], num_classes=4,
                   resize="none")
