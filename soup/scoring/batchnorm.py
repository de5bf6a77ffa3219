"""BatchNorm statistics of soups: averaging running means and variances of different models does
not give the statistics of the averaged model, so soups of models whose BatchNorm layers were
trained (not frozen) get them recomputed on training images before they are evaluated or saved.
Layers whose statistics no ingredient changed keep them: a frozen BatchNorm stays frozen.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from trainers.evaluate import autocast_for

log = logging.getLogger(__name__)
STATS = ("running_mean", "running_var")


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats}


def moved_layers(layers: list[str], state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> set[str]:
    """The BatchNorm layers whose statistics in `state` differ from the reference's (trained, not frozen)."""
    return {name for name in layers
            if any(not torch.equal(state[f"{name}.{s}"], reference[f"{name}.{s}"]) for s in STATS)}


class Recalibrator:
    """Recompute the running statistics of the given BatchNorm layers as the exact average over
    `images` (momentum None), every other layer in eval mode."""

    def __init__(self, layers: set[str], images: torch.Tensor, device: torch.device, precision: str,
                 batch_size: int = 256):
        self.layers = layers
        self.images = images
        self.device = device
        self.precision = precision
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        bns = {n: m for n, m in batchnorm_layers(model).items() if n in self.layers}
        momenta = {n: m.momentum for n, m in bns.items()}
        model.eval()
        for m in bns.values():
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: every batch counts the same
            m.train()
        try:
            with autocast_for(self.device, self.precision):
                for start in range(0, len(self.images), self.batch_size):
                    batch = self.images[start:start + self.batch_size].to(self.device).float().div_(255)
                    model(batch)
        finally:
            for n, m in bns.items():
                m.momentum = momenta[n]
            model.eval()
