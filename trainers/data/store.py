"""The image store: one Parquet file per split.

Columns: `image` (encoded PNG/JPEG bytes), `label` (int index into the class list), `class_name`,
`domain`. The class list travels in the file's schema metadata, so every split names its classes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image, encode_png

from trainers.errors import UserError

CLASSES_KEY = b"soupsweep.classes"


@dataclass
class ImageSet:
    """A decoded split: uint8 images (N, 3, S, S), int64 labels (N,), the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def write_split(path: str | Path, images: torch.Tensor, labels: list[int], classes: list[str],
                domain: str = "") -> None:
    """Write uint8 images (N, 3, H, W) with integer labels as one Parquet split."""
    encoded = [encode_png(img).numpy().tobytes() for img in images]
    table = pa.table({
        "image": pa.array(encoded, pa.binary()),
        "label": pa.array(labels, pa.int32()),
        "class_name": pa.array([classes[i] for i in labels], pa.string()),
        "domain": pa.array([domain] * len(labels), pa.string()),
    })
    table = table.replace_schema_metadata({CLASSES_KEY: json.dumps(classes).encode()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_classes(path: str) -> list[str]:
    """The class list of a split, from its schema metadata alone (no image is read)."""
    metadata = _open(path).schema_arrow.metadata or {}
    if CLASSES_KEY not in metadata:
        raise UserError(f"data: {path} has no class list in its metadata; write it with "
                        "trainers.data.store.write_split")
    return json.loads(metadata[CLASSES_KEY])


def check_split(path: str, classes: list[str]) -> int:
    """Check a split's class list and labels without decoding images; returns its size."""
    own = read_classes(path)
    if own != classes:
        raise UserError(f"data: {path} lists classes {own}, but the training set lists {classes}; "
                        "every split must use the same class list in the same order")
    labels = _open(path).read(columns=["label"]).column("label").to_pylist()
    if not labels:
        raise UserError(f"data: {path} holds no images; give a non-empty split")
    bad = sorted({label for label in labels if not 0 <= label < len(classes)})
    if bad:
        raise UserError(f"data: {path} has labels {bad[:5]} outside the class list "
                        f"(0..{len(classes) - 1}: {classes}); fix the labels or the class list")
    return len(labels)


def read_split(path: str, image_size: int) -> ImageSet:
    """Decode a split to uint8 tensors at `image_size` (short side resized, centre-cropped)."""
    table = _open(path).read(columns=["image", "label"])
    images = [_decode(blob, image_size) for blob in table.column("image").to_pylist()]
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.int64)
    return ImageSet(torch.stack(images), labels, read_classes(path))


def _decode(blob: bytes, size: int) -> torch.Tensor:
    image = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
    if image.shape[-2:] != (size, size):
        image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
    return image


def _open(path: str) -> pq.ParquetFile:
    if not path:
        raise UserError("data: a split path is empty; set data.train, data.val, data.heldout and data.test")
    if "://" not in path and not Path(path).is_file():
        raise UserError(f"data: {path} does not exist; check the path in your config "
                        "(or run without --config to generate the demo data)")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"data: cannot read {path} as Parquet ({err})") from None


def check_dataset(data) -> list[str]:
    """Check every split of a DataConfig before training; returns the class list of `train`."""
    classes = read_classes(data.train)
    for split, path in {"train": data.train, **data.splits()}.items():
        if not path:
            raise UserError(f"data.{split.replace('/', '.')}: no path given; every sweep needs "
                            "train, val, heldout and test splits")
        check_split(path, classes)
    return classes
