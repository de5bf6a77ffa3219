"""The base model: the one initialisation that every trial of a sweep starts from.

Soups only work for models fine-tuned from one shared initialisation, so the base is built once
(pretrained tower + zero-shot head), written as a checkpoint, and identified by its checksum.
"""
from __future__ import annotations

from pathlib import Path

from trainers.checkpoint import save_checkpoint
from trainers.config import TrainConfig
from trainers.data.store import check_dataset
from trainers.model import build_zeroshot_classifier, state_checksum


def write_base_checkpoint(cfg: TrainConfig, directory: str | Path) -> str:
    """Check the data, build the zero-shot classifier, save it; returns the base checksum."""
    classes = check_dataset(cfg.data)
    model = build_zeroshot_classifier(cfg.model, classes)
    state = model.state_dict()
    checksum = state_checksum(state)
    meta = {"config": cfg.model_dump(mode="json"), "base_checksum": checksum, "classes": classes,
            "epoch": 0, "step": 0, "metrics": {}, "trial_id": "base"}
    save_checkpoint(directory, state, meta)
    return checksum
