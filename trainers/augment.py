"""Training augmentation in batches on the device the images are on (the GPU, or the CPU for tests and
CPU-only users, with the same semantics): random resized crop, flip, RandAugment, mixup and cutmix.

Every random draw comes from a CPU generator that the caller seeds per (seed, rank, epoch): runs are
reproducible on any device and no draw waits for the device.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from trainers.data.randaugment import randaugment
from trainers.config import AugConfig
from trainers.data.decode import crop_resize, image_sizes, to_uint8

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratios, as torchvision's default
ATTEMPTS = 10


def crop_boxes(sizes: torch.Tensor, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes (x0, y0, x1, y1) for images of (H, W) `sizes`, drawn as torchvision does:
    area fraction ~ U(scale), log aspect ~ U(log ratio), the first of 10 tries that fits, else a centre crop."""
    n = len(sizes)
    height, width = sizes[:, :1], sizes[:, 1:]
    area = height * width * torch.empty(n, ATTEMPTS).uniform_(*scale, generator=gen)
    log_ratio = torch.empty(n, ATTEMPTS).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=gen)
    w = torch.sqrt(area * torch.exp(log_ratio)).round()
    h = torch.sqrt(area / torch.exp(log_ratio)).round()
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    pick = first.clamp(min=0).unsqueeze(1)
    w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
    # Fallback (no try fits): the largest centred crop with the aspect ratio clamped into RATIO.
    aspect = (sizes[:, 1] / sizes[:, 0]).clamp(*RATIO)
    fw = torch.minimum(sizes[:, 1], (sizes[:, 0] * aspect).round())
    fh = torch.minimum(sizes[:, 0], (sizes[:, 1] / aspect).round())
    ok = first >= 0
    w, h = torch.where(ok, w, fw), torch.where(ok, h, fh)
    u = torch.rand(n, 2, generator=gen)
    y0 = torch.where(ok, torch.floor(u[:, 0] * (sizes[:, 0] - h + 1)), torch.floor((sizes[:, 0] - h) / 2))
    x0 = torch.where(ok, torch.floor(u[:, 1] * (sizes[:, 1] - w + 1)), torch.floor((sizes[:, 1] - w) / 2))
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


class BatchAugment:
    """Decoded uint8 images (a list: sizes differ) -> float (B, 3, S, S) in [0, 1], augmented in batches."""

    def __init__(self, aug: AugConfig, size: int):
        self.aug, self.size = aug, size

    def __call__(self, images: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        boxes = crop_boxes(image_sizes(images), (self.aug.min_scale, 1.0), gen)
        batch = crop_resize(images, boxes, self.size)
        if self.aug.hflip:
            flip = (torch.rand(len(images), generator=gen) < 0.5).to(batch.device).view(-1, 1, 1, 1)
            batch = torch.where(flip, batch.flip(-1), batch)
        if self.aug.randaug_n:
            batch = randaugment(to_uint8(batch), self.aug.randaug_n, self.aug.randaug_m, gen).float()
        return batch.div_(255)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing spread over all classes."""
    targets = torch.full((len(labels), num_classes), smoothing / num_classes, device=labels.device)
    return targets.scatter_(1, labels.unsqueeze(1), 1.0 - smoothing + smoothing / num_classes)


def mix(images: torch.Tensor, targets: torch.Tensor, aug: AugConfig,
        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one of them per batch, evenly, when both are on) of each sample with the batch
    reversed; lambda ~ Beta(alpha, alpha) per batch, cutmix's lambda corrected to the pasted box's area."""
    on = [(name, alpha) for name, alpha in (("mixup", aug.mixup_alpha), ("cutmix", aug.cutmix_alpha)) if alpha > 0]
    if not on:
        return images, targets
    name, alpha = on[int(torch.randint(len(on), (1,), generator=gen))]
    lam = beta(alpha, gen)
    if name == "mixup":
        images = lam * images + (1 - lam) * images.flip(0)
    else:
        images, lam = cutmix(images, lam, gen)
    return images, lam * targets + (1 - lam) * targets.flip(0)


def cutmix(images: torch.Tensor, lam: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of area (1 - lam) from the reversed batch; returns the images and the true lam."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    cy, cx = (int(v) for v in (torch.rand(2, generator=gen) * torch.tensor([height, width])))
    half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
    images = images.clone()
    images[:, :, y0:y1, x0:x1] = images.flip(0)[:, :, y0:y1, x0:x1]
    return images, 1 - (y1 - y0) * (x1 - x0) / (height * width)


def beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, seeded from `gen` (torch.distributions takes no generator)."""
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
