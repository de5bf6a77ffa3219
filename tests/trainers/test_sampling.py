"""The class-balanced sampler draws classes uniformly from imbalanced data."""
from __future__ import annotations

import torch

from trainers.config import AugConfig
from trainers.data.loader import TrainLoader
from trainers.data.store import write_split
from trainers.data.synthetic import CLASSES, render
from trainers.sampling import BalancedTrainLoader, balanced_rows

COUNTS = [200, 20, 10, 6]  # an inspection-data-like imbalance: 85 % of one class


def test_balanced_rows_draw_every_class_equally_often():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([5000, 300, 40, 1])])
    rows = balanced_rows(labels, 40_000, torch.Generator().manual_seed(0))
    share = torch.bincount(labels[rows], minlength=4).float() / len(rows)
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.01)
    assert (labels[rows] == 3).sum() > 9000  # the single image of class 3 is drawn again and again


def test_the_balanced_loader_feeds_classes_uniformly(tmp_path):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    write_split(tmp_path / "train", render(labels, "photo", 32, torch.Generator().manual_seed(1)), labels.tolist(),
                CLASSES, row_group_rows=32)
    seen = {}
    for loader_type in (TrainLoader, BalancedTrainLoader):
        loader = loader_type(str(tmp_path / "train"), AugConfig(), 32, 16, seed=3, device=torch.device("cpu"))
        drawn = torch.cat([batch_labels for epoch in range(3) for _, batch_labels in loader.epoch(epoch)])
        assert len(drawn) == 3 * (sum(COUNTS) // 16) * 16  # the epoch keeps its length
        seen[loader_type] = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert seen[TrainLoader][0] > 0.8  # without it, the data's imbalance
    assert torch.allclose(seen[BalancedTrainLoader], torch.full((4,), 0.25), atol=0.05)
