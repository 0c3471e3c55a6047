"""The fixed feature network of the loss terms that need one (`perceptual`): the trial's `perceptual_net`.

`domain` (the default, offline): the dataset's domain classifier, the one its FID uses. `vgg16` / `vgg19`:
torchvision's ImageNet VGG cut after a ReLU layer (`vgg16:relu2_2`; relu3_3 unless named), from a local weights file
that `gan-bench prefetch --vgg NET` downloads, since compute nodes have no internet.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from bench import BenchError, terms
from bench.data import Dataset
from bench.io import cache_dir, damage_reason, environment_fault, move_aside
from bench.metrics import domain_feature_net, read_back

DEFAULT = "domain"
# Convolutions per block of torchvision's configurations "D" and "E"; each block ends with a max pool.
VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_URLS = {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
            "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1.url}
DEFAULT_LAYER = "relu3_3"  # mid-level texture features, the usual perceptual-loss layer; in both nets
# Smaller images are upsampled to this side: after relu4_x's three pools 32 px still leave 4×4 features.
MIN_SIDE = 32
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _modules(net: str) -> list[str]:
    """The names of `net`'s `features` modules, in order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, …"""
    names = []
    for block, convolutions in enumerate(VGG_BLOCKS[net], 1):
        for i in range(1, convolutions + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def layers(net: str) -> list[str]:
    """The layers `net` may be cut after: its ReLUs."""
    return [name for name in _modules(net) if name.startswith("relu")]


def canonical(spec: str) -> str:
    """`spec` (domain, vgg16, vgg19:relu4_4, …) with its layer named, as configs record it; ValueError if invalid."""
    net, sep, layer = spec.partition(":")
    if net == DEFAULT and not sep:
        return spec
    if net not in VGG_BLOCKS:
        raise ValueError(f"expected domain, vgg16[:LAYER] or vgg19[:LAYER], got {spec!r}")
    layer = layer if sep else DEFAULT_LAYER
    if layer not in layers(net):
        raise ValueError(f"{net} has no layer {layer!r}; valid: {', '.join(layers(net))}")
    return f"{net}:{layer}"


def needs_feature_net(term_names: Iterable[str]) -> bool:
    """Whether any of these terms reads the fixed feature network (and so `perceptual_net` matters)."""
    return any("feature_net" in terms.get(name).needs for name in term_names)


def vgg_weights_path(net: str) -> Path:
    """Where `gan-bench prefetch --vgg NET` puts torchvision's weights file, under its own name."""
    return cache_dir() / "weights" / VGG_URLS[net].rpartition("/")[2]


def vgg_hash_prefix(net: str) -> str:
    """The sha256 prefix that torchvision's file name carries (vgg16-397923af.pth), which torchvision checks."""
    return re.search(r"-([a-f0-9]+)\.", vgg_weights_path(net).name).group(1)


def missing_weights(spec: str) -> str | None:
    """One line naming `spec`'s missing weights file and the command that fetches it; None if it needs none."""
    net = spec.partition(":")[0]
    if net == DEFAULT or vgg_weights_path(net).is_file():
        return None
    return (f"perceptual_net: {net} weights {vgg_weights_path(net)} not found; fetch them with "
            f"`gan-bench prefetch --vgg {net}` (on a machine with internet)")


class VGGFeatures(nn.Module):
    """Images in [0, 1] (1 or 3 channels, any size) to a VGG's activations at one layer, as ImageNet VGGs expect
    them: grayscale repeated to 3 channels, normalised by ImageNet's mean and std, smaller than MIN_SIDE upsampled."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        side = min(x.shape[-2:])
        if side < MIN_SIDE:
            size = [math.ceil(s * MIN_SIDE / side) for s in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.features((x - self.mean) / self.std)


def vgg_feature_net(spec: str, device: torch.device) -> VGGFeatures:
    """The VGG of a canonical `spec` (vgg16:relu3_3) from its local weights file, cut after its layer; frozen, in eval
    mode. Raises a one-line BenchError if the file is missing or is not that VGG's state_dict."""
    problem = missing_weights(spec)
    if problem:
        raise BenchError(problem)
    net, _, layer = spec.partition(":")
    path = vgg_weights_path(net)
    try:
        state = read_back(path)
        with torch.device("meta"):  # no random initialisation of 138M parameters that the file replaces
            model = getattr(torchvision.models, net)(weights=None)
        model.load_state_dict(state, assign=True)
    except Exception as error:  # unpickling, zip and missing-key errors alike: the file is not what it should be
        if (fault := environment_fault(error)) is not None and not isinstance(error, FileNotFoundError):
            raise fault from None
        reason = damage_reason(error)
        move_aside(path, reason, rebuilt=False)  # downloaded weights cannot be rebuilt offline: prefetch fetches them
        raise BenchError(f"perceptual_net: {path} is not torchvision's {net} weights ({reason}); moved aside to "
                         f"{path.name}.damaged; fetch it again with `gan-bench prefetch --vgg {net}`") from None
    features = model.features[: _modules(net).index(layer) + 1]  # the classifier (most of the file) is dropped
    return VGGFeatures(features).to(device).eval().requires_grad_(False)


def load(spec: str, dataset: Dataset, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature network a canonical `perceptual_net` names, for images of `dataset`."""
    return domain_feature_net(dataset, device) if spec == DEFAULT else vgg_feature_net(spec, device)
