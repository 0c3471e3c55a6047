"""The device a trial runs on and the versions it records: asked for by the trial, by prefetch and by `--version`,
owned by none of them."""

from __future__ import annotations

import platform
import warnings

import torch
import torchvision

import bench


def resolve_device(requested: str) -> torch.device:
    """CUDA when asked (or 'auto') and available; otherwise the CPU, with a warning if CUDA was asked for."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {requested!r} asked for but CUDA is not available: running on the CPU")
        return torch.device("cpu")
    return device


def versions() -> dict[str, str]:
    import optuna
    import torch_fidelity

    return {"gan_bench": bench.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_fidelity": torch_fidelity.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}
