"""Training augmentation on uint8 image batches: random resized crop, flip, RandAugment, mixup.

Runs on whatever device the batch is on (torchvision transforms v2 accept tensors).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from trainers.config import AugConfig


class TrainAugment:
    """Per-image geometric and photometric augmentation: uint8 (B,3,H,W) -> float (B,3,S,S) in [0,1]."""

    def __init__(self, aug: AugConfig, size: int):
        steps: list = [v2.RandomResizedCrop(size, scale=(aug.min_scale, 1.0), antialias=True)]
        if aug.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if aug.randaug_n:
            steps.append(v2.RandAugment(num_ops=aug.randaug_n, magnitude=aug.randaug_m))
        self.per_image = v2.Compose(steps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.per_image(image) for image in images]).float().div_(255)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing spread over all classes."""
    targets = torch.full((len(labels), num_classes), smoothing / num_classes, device=labels.device)
    return targets.scatter_(1, labels.unsqueeze(1), 1.0 - smoothing + smoothing / num_classes)


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each sample with the batch reversed, by one lambda ~ Beta(alpha, alpha) per batch.

    lambda is drawn on the host from a seeded generator: no device sync, reproducible per rank."""
    if alpha <= 0:
        return images, targets
    lam = float(rng.beta(alpha, alpha))
    return lam * images + (1 - lam) * images.flip(0), lam * targets + (1 - lam) * targets.flip(0)
