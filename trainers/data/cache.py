"""The evaluation cache: an evaluation set decoded and centre-cropped once, kept on the device as uint8.

The training loop (val) and the soup stage (heldout, test, shift sets) both load their sets here, so every
model is evaluated on the same pixels and every later pass runs at model speed.
"""
from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch

from trainers.data.decode import decode_centre
from trainers.data.store import open_shards, read_classes, read_covers

DECODE_BATCH = 256  # images decoded per call: bounds the float canvas while loading


@dataclass
class CachedSet:
    """uint8 images (N, 3, S, S) and int64 labels on one device; `covers` (class names) when the set covers
    only some classes: its logits are then projected onto them."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    covers: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def project(self, logits: torch.Tensor) -> torch.Tensor:
        return project_logits(logits, covers_mask(self.classes, self.covers))


def covers_mask(classes: list[str], covers: list[str] | None) -> torch.Tensor | None:
    """bool (classes,) of the covered classes, or None when a set covers them all."""
    if covers is None or set(classes) <= set(covers):
        return None
    return torch.tensor([name in covers for name in classes])


def project_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits restricted to the covered classes: the others can neither be predicted nor take probability.

    A large finite value rather than -inf keeps averages, entropies and calibration sums finite."""
    return logits if mask is None else logits.masked_fill(~mask.to(logits.device), -1e9)


def load_eval_set(path: str, size: int, device: torch.device, part: tuple[int, int] = (0, 1),
                  rows: Collection[int] | None = None) -> CachedSet:
    """Decode a split once (batched, on `device`) into a cache; `part=(rank, world)` keeps every world-th row,
    `rows` (indices into the split) only those rows: the others are never decoded."""
    images, labels = [], []
    for batch, batch_labels in decoded_batches(path, size, device, part, rows):
        images.append(batch)
        labels += batch_labels
    classes = read_classes(path)
    empty = torch.empty(0, 3, size, size, dtype=torch.uint8, device=device)
    return CachedSet(torch.cat(images) if images else empty,
                     torch.tensor(labels, dtype=torch.int64, device=device), classes, read_covers(path))


def decoded_batches(path: str, size: int, device: torch.device, part: tuple[int, int] = (0, 1),
                    rows: Collection[int] | None = None) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """The kept rows of a split (see load_eval_set), decoded and centre-cropped DECODE_BATCH at a time on
    `device`, with their labels: whoever consumes them holds one batch of pixels at a time."""
    rank, world = part
    rows = None if rows is None else set(rows)
    offset = 0
    for shard in open_shards(path):
        for group in range(shard.num_row_groups):
            count = shard.metadata.row_group(group).num_rows
            keep = [i for i in range(count) if (offset + i) % world == rank and (rows is None or offset + i in rows)]
            offset += count
            if not keep:  # a row group with none of the rows asked for is never read
                continue
            table = shard.read_row_group(group, columns=["image", "label"])
            blobs = table.column("image").take(keep).to_pylist()
            labels = table.column("label").take(keep).to_pylist()
            for start in range(0, len(blobs), DECODE_BATCH):
                yield (decode_centre(blobs[start:start + DECODE_BATCH], size, device),
                       labels[start:start + DECODE_BATCH])
