"""A trial run's per-class report on the val split (an MLflow table), read from the checkpoint that
Ray Train kept for the trial."""
from __future__ import annotations

import posixpath

from sweep.train_storage import kept_checkpoint
from trainers import metrics as M
from trainers.checkpoint import read_meta

PER_CLASS_TABLE = "per_class_val.json"  # on a trial run: its last checkpoint's per-class report on val


def kept_or_reported(reported: str) -> str:
    """The trial's ingredient: the checkpoint Ray Train kept in the run folder of `reported` (the last
    one Tune saw), else `reported`. A trial that Tune stopped may have saved a newer checkpoint before
    it ended, and num_to_keep then deleted the reported one."""
    return kept_checkpoint(posixpath.dirname(reported.rstrip("/"))) or reported


def per_class_table(checkpoint: str) -> dict[str, list]:
    """The per-class report on the val split of a checkpoint (its meta.json; local, s3://, gs://),
    with its epoch as a column."""
    meta = read_meta(checkpoint)
    table = meta.get("per_class", {}).get("val")
    if not table:
        raise ValueError(f"{checkpoint}/meta.json has no per-class report")
    return {**table, M.EPOCH: [meta["epoch"]] * len(table["class"])}


def kept_per_class_table(reported: str) -> dict[str, list]:
    return per_class_table(kept_or_reported(reported))
