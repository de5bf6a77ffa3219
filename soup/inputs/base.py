"""The base: the shared initialisation (the zero-shot model) every ingredient started from, and what
it fixes (model config, classes, checksum); read from a sweep's base checkpoint or given by --base."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.baselines import BASELINES_JSON, BASELINES_TENSORS, Baselines
from trainers.checkpoint import META, WEIGHTS, ChangedCheckpoint, local_checkpoint, read_meta, verify_file
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.uris import is_remote

log = logging.getLogger(__name__)


@dataclass
class Base:
    """The shared initialisation (the zero-shot model) and what it fixes: model config and classes."""

    config: TrainConfig
    classes: list[str]
    file: Path | None = None  # a local safetensors file with normalised keys; None when not given
    checksum: str = ""
    head_init: str = ""
    meta: dict[str, Any] | None = None
    baselines: Baselines | None = None  # the training-free baselines a sweep computed with its base


def base_from_checkpoint(uri: str, workdir: Path) -> Base:
    """The base a sweep wrote (local path or any pyarrow.fs URI), its weights kept local for the stage."""
    try:
        with local_checkpoint(uri, files=(META, WEIGHTS, BASELINES_JSON, BASELINES_TENSORS)) as path:
            meta = read_meta(path)
            verify_file(path, WEIGHTS, meta)  # WiSE-FT and the screening would mix a changed base in
            file = _local_weights(uri, path, workdir)
            baselines = _baselines(path, meta)
    except (OSError, ValueError) as err:
        raise UserError(f"the sweep's base checkpoint {uri} cannot be read ({type(err).__name__}: {err}); "
                        "it is written when the sweep starts: check the storage the sweep used") from None
    return Base(TrainConfig.model_validate(meta["config"]), meta["classes"], file, meta.get("base_checksum", ""),
                meta.get("head_init", ""), meta, baselines)


def _baselines(path: Path, meta: dict[str, Any]) -> Baselines | None:
    """The training-free baselines kept with the base; None (with a warning) when missing or changed:
    they are only shown beside the soups, so the stage goes on without them."""
    if not (path / BASELINES_JSON).is_file():
        return None
    try:
        for name in (BASELINES_JSON, BASELINES_TENSORS):
            verify_file(path, name, meta)
    except ChangedCheckpoint as err:
        log.warning("not showing the training-free baselines: %s", err)
        return None
    return Baselines.load(path)


def _local_weights(uri: str, path: Path, workdir: Path) -> Path:
    """The base's weights file, copied into the work directory when `uri` is remote."""
    if is_remote(uri):
        shutil.copyfile(path / WEIGHTS, workdir / "base.safetensors")
        return workdir / "base.safetensors"
    return path / WEIGHTS
