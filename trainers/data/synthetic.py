"""Generated demo data: shapes that a tiny model learns in seconds, in two visual styles.

`photo` (filled shapes on noisy coloured backgrounds) is the in-distribution style; `sketch`
(grey shapes with dark outlines on light paper) is the distribution shift. The class is the shape, so a model can
carry what it learned across styles, but only partly: that gap is what robustness numbers show.
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainers.data.store import STORE_FORMAT, write_card, write_split

CLASSES = ["circle", "square", "triangle", "cross"]
SPLIT_SIZES = {"train": 512, "val": 128, "heldout": 128, "test": 256}


def shape_masks(label: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Boolean masks (N, S, S) of the shape each label names, at a random position and size."""
    n = len(label)
    coords = torch.arange(size, dtype=torch.float32)
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    cx = (size / 2 + (torch.rand(n, generator=gen) - 0.5) * size / 4).view(n, 1, 1)
    cy = (size / 2 + (torch.rand(n, generator=gen) - 0.5) * size / 4).view(n, 1, 1)
    r = (size * (0.22 + 0.12 * torch.rand(n, generator=gen))).view(n, 1, 1)
    dx, dy = x - cx, y - cy
    masks = torch.stack([
        dx**2 + dy**2 < r**2,  # circle
        (dx.abs() < r * 0.85) & (dy.abs() < r * 0.85),  # square
        (dy < r * 0.8) & (dy > -r) & (dx.abs() < (dy + r) * 0.55),  # triangle
        ((dx.abs() < r / 3) & (dy.abs() < r)) | ((dy.abs() < r / 3) & (dx.abs() < r)),  # cross
    ], dim=1)
    return masks[torch.arange(n), label]


def render(label: torch.Tensor, style: str, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 images (N, 3, S, S) of the labelled shapes in a style: 'photo' or 'sketch'."""
    masks = shape_masks(label, size, gen).unsqueeze(1)
    n = len(label)
    if style == "photo":
        background = torch.rand(n, 3, 1, 1, generator=gen) * 0.5
        foreground = 0.5 + torch.rand(n, 3, 1, 1, generator=gen) * 0.5
        image = torch.where(masks, foreground, background)
        image = image + 0.08 * torch.randn(n, 3, size, size, generator=gen)
    elif style == "sketch":
        # Light paper, a grey-filled shape with a dark outline: same shapes, other colours and texture.
        eroded = -torch.nn.functional.max_pool2d(-masks.float(), 3, 1, 1) > 0.5
        outline = masks & ~eroded
        paper = 0.75 + 0.2 * torch.rand(n, 1, 1, 1, generator=gen)
        image = torch.where(masks, paper - 0.35, paper)
        image = torch.where(outline, torch.tensor(0.05), image).expand(n, 3, size, size)
        image = image + 0.05 * torch.randn(n, 3, size, size, generator=gen)
    else:
        raise ValueError(f"unknown style {style!r}: use 'photo' or 'sketch'")
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def demo_split_paths(out_dir: str | Path) -> dict[str, str]:
    """Where the demo store keeps each split: <out>/<split> and <out>/shift/sketch (directories of shards)."""
    out_dir = Path(out_dir).resolve()
    return {split: str(out_dir / ("shift/sketch" if split == "sketch" else split)) for split in [*SPLIT_SIZES, "sketch"]}


def write_demo_data(out_dir: str | Path, size: int = 32, seed: int = 0,
                    sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Write a store (the builder's writer, JPEG shards and a dataset card) with train/val/heldout/test
    (photo) and the shift set 'sketch'; returns split name -> path (key 'sketch' for the shift set)."""
    gen = torch.Generator().manual_seed(seed)
    paths = demo_split_paths(out_dir)
    card = {"format": STORE_FORMAT, "classes": CLASSES, "size": size, "source": "generated shapes",
            "splits": {}, "skipped": []}
    for split, count in {**SPLIT_SIZES, "sketch": 256, **(sizes or {})}.items():
        labels = torch.arange(count) % len(CLASSES)
        labels = labels[torch.randperm(count, generator=gen)]
        style = "sketch" if split == "sketch" else "photo"
        entry = write_split(paths[split], render(labels, style, size, gen), labels.tolist(), CLASSES, style)
        card["splits"]["shift/sketch" if split == "sketch" else split] = {
            "path": str(Path(paths[split]).relative_to(Path(out_dir).resolve())), **entry}
    write_card(str(Path(out_dir).resolve()), card)
    return paths
