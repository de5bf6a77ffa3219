"""Metric names, defined once: Tune, checkpoint scoring, the soup's sort key and MLflow import these."""
from __future__ import annotations

import torch

EPOCH = "epoch"
STEP = "step"
LR = "lr"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1"
HELDOUT_TOP1 = "heldout/top1"
TEST_TOP1 = "test/top1"
DIVERGED = "diverged"  # 1.0 in the last report of a run whose training loss went non-finite


def top1_name(split: str) -> str:
    """'heldout' -> 'heldout/top1', 'shift/sketch' -> 'shift/sketch/top1'."""
    return f"{split}/top1"


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()
