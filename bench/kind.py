"""What a kind of trial provides the driver loop (bench.trial.run_trial): its networks and optimisers, one training
step and one evaluation. Everything every trial does besides (checkpoints and their exact restore, the evaluation
schedule, the statuses, the listener and pruning, timing, result.json) is the driver's.

A new kind is one file: a TrialKind subclass registered in KINDS under the name TrialConfig.kind gives it, and its
import beside the others in bench.trial.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from bench.config import TrialConfig
from bench.data import Dataset
from bench.metrics import Scorer
from bench.registry import Registry


class TrialKind(ABC):
    """One kind of trial on one dataset and device. The driver calls, in order: the constructor (which reads what the
    kind needs and refuses what it cannot train, drawing no weights), build() right after seeding torch with the
    trial's seed, begin(rng) with the trial's random stream, then load_state_dict() when resuming, and step() and
    evaluate() as the schedule says."""

    label: str  # the progress bar's description
    shown: tuple[str, ...]  # the row's metrics the progress bar shows after an evaluation (those the row has)

    def __init__(self, config: TrialConfig, dataset: Dataset, device: torch.device):
        self.config, self.dataset, self.device = config, dataset, device

    @classmethod
    @abstractmethod
    def networks(cls, config: TrialConfig, image_shape: tuple[int, int, int]) -> list[nn.Module]:
        """The trial's networks at PyTorch's layer defaults, for sizing (bench.trial.disk_bytes)."""

    @abstractmethod
    def build(self) -> None:
        """Draws the networks' initial weights (torch is seeded just before) and makes the optimisers."""

    @abstractmethod
    def begin(self, rng: torch.Generator) -> None:
        """Takes the trial's random stream, which draws every batch, latent and penalty sample from here on."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The kind's part of checkpoint.pt: its networks, optimisers and running values."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what state_dict saved (`state` is the whole checkpoint)."""

    @abstractmethod
    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One step of the budget (1-based); returns the values that must stay finite (a non-finite one: diverged),
        as tensors on the device: the driver reads them only at its checks (bench.trial.CHECK_EVERY), so that a step
        never waits for the device."""

    @abstractmethod
    def evaluate(self, scorer: Scorer, samples: Path) -> dict[str, Any]:
        """The evaluation row (metrics, then spread, d_loss and g_loss; the driver adds the step), with a grid of
        samples written to `samples`. Training mode is back on when it returns."""


KINDS: Registry[type[TrialKind]] = Registry("trial kind")


def make_optimizer(params: Iterable[torch.nn.Parameter], config: TrialConfig) -> torch.optim.Optimizer:
    """Adam (every model of the paper), or RMSProp as TensorFlow 1 had it for the paper's WGAN experiment
    (gans/WGAN.py lines 45-53: tf.train.RMSPropOptimizer(lr), whose decay is 0.9, epsilon 1e-10 and mean square
    starts at 1, where PyTorch's starts at 0 and would make the first steps ~3× the learning rate)."""
    params = list(params)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))
    optimizer = torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-10)
    for p in params:
        optimizer.state[p] = {"step": torch.zeros(()), "square_avg": torch.ones_like(p)}
    return optimizer
