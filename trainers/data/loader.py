"""The training loader: each rank reads its own slice of the store's shards and yields augmented batches
on its device.

Per epoch the row groups of all shards are put in an order shared by every rank (seeded by seed and epoch),
and the rows, in that order, are cut into `world` equal contiguous slices: a rank reads only the row groups
of its slice, no row is in two slices (no sample is seen twice across ranks within an epoch), every rank
takes the same number of steps, and the rows left over (fewer than `world`) change from epoch to epoch.
Within its slice a rank reads its row groups in an order of its own and draws batches from a shuffle buffer
(seeded by seed, epoch and rank): the store's builder wrote rows in a shuffled order, so row groups mix
classes. Batches are read, decoded and augmented on the device by a background thread, a few batches ahead
of the training step.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow.parquet as pq
import torch

from trainers.augment import BatchAugment
from trainers.config import AugConfig
from trainers.data.decode import decode_batch
from trainers.data.store import open_shards, read_classes


@dataclass(frozen=True)
class RowGroup:
    shard: int
    group: int
    first: int  # index of its first row in the whole split (shards in order)
    rows: int


def row_groups(shards: list[pq.ParquetFile]) -> list[RowGroup]:
    units, first = [], 0
    for s, shard in enumerate(shards):
        for g in range(shard.num_row_groups):
            rows = shard.metadata.row_group(g).num_rows
            units.append(RowGroup(s, g, first, rows))
            first += rows
    return units


def epoch_plan(units: list[RowGroup], seed: int, epoch: int, rank: int,
               world: int) -> list[tuple[RowGroup, int, int]]:
    """This rank's rows for an epoch, as (row group, start, stop) slices of row groups."""
    order = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    per_rank = sum(u.rows for u in units) // world
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    plan, position = [], 0
    for unit in (units[i] for i in order.tolist()):
        start, stop = max(lo - position, 0), min(hi - position, unit.rows)
        if start < stop:
            plan.append((unit, start, stop))
        position += unit.rows
    return plan


def epoch_rows(units: list[RowGroup], seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """The split-wide indices of this rank's rows for an epoch (what `epoch_plan` reads)."""
    return [u.first + i for u, start, stop in epoch_plan(units, seed, epoch, rank, world) for i in range(start, stop)]


class TrainLoader:
    """This rank's training batches, (float images (B, 3, S, S) in [0, 1], int64 labels), on `device`."""

    def __init__(self, path: str, aug: AugConfig, size: int, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world: int = 1, prefetch: int = 3,
                 shuffle_rows: int = 4096):
        self.shards = open_shards(path)
        self.units = row_groups(self.shards)
        self.classes = read_classes(path)
        self.num_rows = sum(u.rows for u in self.units)
        self.augment = BatchAugment(aug, size)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world, self.prefetch = rank, world, prefetch
        self.shuffle_rows = shuffle_rows  # rows kept ahead for shuffling: ~16 row groups of the store
        self.steps_per_epoch = self.num_rows // world // batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1000003 + epoch) * 1009 + self.rank)

    def chunks(self, epoch: int, gen: torch.Generator) -> Iterator[tuple[list[bytes], list[int]]]:
        """This rank's rows for an epoch, one row group (or the part of it in this rank's slice) at a time,
        in an order of its own."""
        plan = epoch_plan(self.units, self.seed, epoch, self.rank, self.world)
        for k in torch.randperm(len(plan), generator=gen).tolist():
            unit, start, stop = plan[k]
            table = self.shards[unit.shard].read_row_group(unit.group, columns=["image", "label"])
            table = table.slice(start, stop - start)
            yield table.column("image").to_pylist(), table.column("label").to_pylist()

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches, made in a background thread a few steps ahead; row groups are read as the
        epoch goes, into a shuffle buffer, so an epoch starts without reading all of its slice first."""
        gen = self.generator(epoch)
        rows = ShuffleBuffer(self.chunks(epoch, gen), self.shuffle_rows + self.batch_size)
        side = SideStream(self.device)

        def batch(step: int):
            with side.active():
                blobs, labels = rows.take(self.batch_size, gen)
                images = decode_batch(blobs, self.device)
                made = self.augment(images, gen), torch.tensor(labels, dtype=torch.int64).to(self.device)
                return made, side.mark()

        for made, ready in prefetched(batch, self.steps_per_epoch, self.prefetch):
            yield side.hand_over(made, ready)


class SideStream:
    """On CUDA, the loader's thread queues its work on a stream of its own: the copies and syncs inside
    decoding and augmentation then wait for the loader's work only, never for the training step queued on
    the main stream. The step's stream waits for a batch's event before using it. Elsewhere: no-ops."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def active(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def mark(self):
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def hand_over(self, tensors: tuple[torch.Tensor, ...], ready) -> tuple[torch.Tensor, ...]:
        if ready is not None:
            main = torch.cuda.current_stream(tensors[0].device)
            main.wait_event(ready)
            for tensor in tensors:
                tensor.record_stream(main)  # the allocator must not reuse it until the step is done with it
        return tensors


class ShuffleBuffer:
    """Rows from a stream of chunks, handed out in random batches from a buffer of at least `fill` rows."""

    def __init__(self, chunks: Iterator[tuple[list[bytes], list[int]]], fill: int):
        self.chunks, self.fill = chunks, fill
        self.blobs: list[bytes] = []
        self.labels: list[int] = []

    def take(self, count: int, gen: torch.Generator) -> tuple[list[bytes], list[int]]:
        for blobs, labels in self.chunks:
            self.blobs += blobs
            self.labels += labels
            if len(self.blobs) >= self.fill:
                break
        picked = torch.randperm(len(self.blobs), generator=gen)[:count].sort(descending=True).values.tolist()
        out = [(self.blobs[i], self.labels[i]) for i in picked]
        for i in picked:  # descending: swap each picked row with the last one and drop it
            self.blobs[i], self.labels[i] = self.blobs[-1], self.labels[-1]
            self.blobs.pop()
            self.labels.pop()
        return [b for b, _ in out], [label for _, label in out]


_END = object()


def prefetched(make: Callable[[int], object], count: int, depth: int) -> Iterator:
    """make(0), make(1), ... computed in order by one background thread, at most `depth` ahead.

    One thread, in order: the random draws stay reproducible. On CUDA both threads use the default stream,
    so a batch's kernels are queued before the step that reads them."""
    if depth <= 0:
        yield from (make(i) for i in range(count))
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for i in range(count):
                if stop.is_set():
                    return
                ready.put(make(i))
        except BaseException as err:  # handed to the consumer, raised there
            ready.put(err)
        ready.put(_END)

    thread = threading.Thread(target=work, name="soupsweep-loader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
