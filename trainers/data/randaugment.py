"""RandAugment on a batch, per image: every image draws its own operations and signs (as torchvision's
RandAugment, same operations and magnitudes), and each operation then runs once on the images that drew it.

Ops work on uint8 (B, 3, S, S) batches on any device; draws come from a CPU generator.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

BINS = 31
NEAREST = InterpolationMode.NEAREST


def _affine(**kwargs) -> Callable[[torch.Tensor, float], torch.Tensor]:
    def apply(images: torch.Tensor, m: float) -> torch.Tensor:
        args = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0]}
        args.update({k: f(m, images) for k, f in kwargs.items()})
        return F.affine(images, **args, interpolation=NEAREST, center=[0, 0] if "shear" in kwargs else None)
    return apply


# name -> (magnitude at bin m of 0..30 for an S-pixel image, signed, apply(images, magnitude))
OPS: dict[str, tuple[Callable[[int, int], float], bool, Callable[[torch.Tensor, float], torch.Tensor]]] = {
    "Identity": (lambda m, s: 0.0, False, lambda x, v: x),
    "ShearX": (lambda m, s: 0.3 * m / (BINS - 1), True,
               _affine(shear=lambda v, x: [math.degrees(math.atan(v)), 0.0])),
    "ShearY": (lambda m, s: 0.3 * m / (BINS - 1), True,
               _affine(shear=lambda v, x: [0.0, math.degrees(math.atan(v))])),
    "TranslateX": (lambda m, s: 150 / 331 * s * m / (BINS - 1), True, _affine(translate=lambda v, x: [int(v), 0])),
    "TranslateY": (lambda m, s: 150 / 331 * s * m / (BINS - 1), True, _affine(translate=lambda v, x: [0, int(v)])),
    "Rotate": (lambda m, s: 30.0 * m / (BINS - 1), True, lambda x, v: F.rotate(x, v, interpolation=NEAREST)),
    "Brightness": (lambda m, s: 0.9 * m / (BINS - 1), True, lambda x, v: F.adjust_brightness(x, 1 + v)),
    "Color": (lambda m, s: 0.9 * m / (BINS - 1), True, lambda x, v: F.adjust_saturation(x, 1 + v)),
    "Contrast": (lambda m, s: 0.9 * m / (BINS - 1), True, lambda x, v: F.adjust_contrast(x, 1 + v)),
    "Sharpness": (lambda m, s: 0.9 * m / (BINS - 1), True, lambda x, v: F.adjust_sharpness(x, 1 + v)),
    "Posterize": (lambda m, s: float(8 - round(m / ((BINS - 1) / 4))), False,
                  lambda x, v: F.posterize(x, int(v))),
    "Solarize": (lambda m, s: 1.0 - m / (BINS - 1), False, lambda x, v: F.solarize(x, 255.0 * v)),
    "AutoContrast": (lambda m, s: 0.0, False, lambda x, v: F.autocontrast(x)),
    "Equalize": (lambda m, s: 0.0, False, lambda x, v: F.equalize(x)),
}
NAMES = list(OPS)


def randaugment(images: torch.Tensor, num_ops: int, magnitude: int, gen: torch.Generator) -> torch.Tensor:
    """Apply `num_ops` random operations per image, in sequence, at `magnitude` (0..30) with random signs."""
    size = images.shape[-1]
    for _ in range(num_ops):
        drawn = torch.randint(len(NAMES), (len(images),), generator=gen)
        negative = torch.rand(len(images), generator=gen) < 0.5
        for k, name in enumerate(NAMES):
            level, signed, apply = OPS[name]
            if name == "Identity":
                continue
            for sign in ((False, True) if signed else (False,)):
                members = (drawn == k) & (negative == sign) if signed else drawn == k
                index = members.nonzero().squeeze(1)
                if len(index):
                    value = -level(magnitude, size) if sign else level(magnitude, size)
                    index = index.to(images.device)
                    images = images.index_copy(0, index, apply(images.index_select(0, index), value))
    return images
