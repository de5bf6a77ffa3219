"""BatchNorm statistics of soups: averaging running means and variances of different models does
not give the statistics of the averaged model, so soups of models whose BatchNorm layers were
trained (not frozen) get them recomputed on training images before they are evaluated or saved.
Layers whose statistics no ingredient changed keep them: a frozen BatchNorm stays frozen.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from soup.inputs.base import Base
from trainers.data.cache import load_eval_set
from trainers.data.store import open_shards
from trainers.errors import UserError
from trainers.evaluate import autocast_for

if TYPE_CHECKING:
    from soup.scoring.evaluation import Evaluator

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


def training_images(path: str, image_size: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` training images (a seeded sample) for recomputing BatchNorm statistics."""
    size = sum(shard.metadata.num_rows for shard in open_shards(path))
    chosen = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return load_eval_set(path, image_size, torch.device("cpu"), rows=chosen).images  # only these are decoded


def recalibrator(base: Base, evaluator: Evaluator, layers: set[str], count: int) -> Recalibrator:
    """BatchNorm statistics of soups are recomputed on training images; without any, refuse."""
    if not base.config.data.train:
        raise UserError(f"the ingredients trained {len(layers)} BatchNorm layers (e.g. {sorted(layers)[0]}): "
                        "soups need their statistics recomputed on training images; pass --train <split.parquet>")
    log.info("recomputing the statistics of %d BatchNorm layers for every soup on %d training images",
             len(layers), count)
    images = training_images(base.config.data.train, evaluator.model.image_size, count)
    return Recalibrator(layers, images.to(evaluator.device), evaluator.device, evaluator.precision)
