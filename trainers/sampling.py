"""A class-balanced sampler for imbalanced data (`data.balanced_sampler`): every draw picks a class
uniformly, then one of its training images uniformly (with replacement), so rare classes are seen as
often as common ones and common ones are subsampled.

An epoch keeps its usual length (training rows // workers per rank). The draws of an epoch are made
once from a generator seeded by (seed, epoch) and shared by all ranks, then cut into one slice per rank.
Rows are read in windows: each window's row groups are read once and its rows handed to the loader's
shuffle buffer in drawn order.
"""
from __future__ import annotations

import bisect
from typing import Iterator

import torch

from trainers.data.loader import TrainLoader
from trainers.errors import UserError

WINDOW = 4096  # rows drawn per read: bounds memory; each window reads the row groups it needs once


def balanced_rows(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` row indices: class uniform over the classes present, row uniform within the class."""
    present = torch.unique(labels)
    if len(present) == 0:
        raise UserError("data.balanced_sampler: the training split holds no images")
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels)[present]
    starts = torch.cumsum(sizes, 0) - sizes
    pick = torch.randint(len(present), (count,), generator=gen)
    within = (torch.rand(count, generator=gen) * sizes[pick]).long()
    return order[starts[pick] + within]


class BalancedTrainLoader(TrainLoader):
    """The training loader with class-balanced draws in place of one pass over the rows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = torch.cat([torch.tensor(shard.read(columns=["label"]).column("label").to_pylist(),
                                              dtype=torch.int64) for shard in self.shards])
        self.firsts = [u.first for u in self.units]

    def chunks(self, epoch: int, gen: torch.Generator) -> Iterator[tuple[list[bytes], list[int]]]:
        per_rank = self.num_rows // self.world
        shared = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        rows = balanced_rows(self.labels, per_rank * self.world, shared)[self.rank * per_rank:(self.rank + 1) * per_rank]
        for start in range(0, len(rows), WINDOW):
            yield self.read_rows(rows[start:start + WINDOW].tolist())

    def read_rows(self, rows: list[int]) -> tuple[list[bytes], list[int]]:
        """The images and labels of split-wide row indices, reading each row group once."""
        wanted: dict[int, list[int]] = {}
        for row in rows:
            wanted.setdefault(bisect.bisect_right(self.firsts, row) - 1, []).append(row)
        found: dict[int, tuple[bytes, int]] = {}
        for index, members in wanted.items():
            unit = self.units[index]
            table = self.shards[unit.shard].read_row_group(unit.group, columns=["image", "label"])
            blobs, labels = table.column("image"), table.column("label")
            for row in set(members):
                found[row] = (blobs[row - unit.first].as_py(), labels[row - unit.first].as_py())
        return [found[r][0] for r in rows], [found[r][1] for r in rows]
