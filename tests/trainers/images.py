"""Small generated image files for the store tests: real JPEG/PNG files in an ImageFolder tree or a manifest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 18), fmt: str = "JPEG") -> Path:
    """A random RGB image of size (width, height), coloured per seed, so that images differ."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 64 + rng.integers(0, 192, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def image_folder(root: Path, classes: dict[str, int], split: str | None = None, start: int = 0) -> list[Path]:
    """<root>[/<split>]/<class>/img<i>.jpg (or .png for every third), `classes[name]` images per class."""
    paths, seed = [], start
    for name, count in classes.items():
        for i in range(count):
            fmt = "PNG" if i % 3 == 2 else "JPEG"
            folder = root / split / name if split else root / name
            size = (24 + i % 3 * 8, 18 + i % 2 * 6)
            paths.append(write_image(folder / f"img{i}.{'png' if fmt == 'PNG' else 'jpg'}", seed, size, fmt))
            seed += 1
    return paths


def corrupt(path: Path) -> Path:
    """A file with an image name whose content is not an image (a truncated JPEG header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path
