"""The checkpoint format, defined once.

A checkpoint is a directory:
  model.safetensors   weights of the classifier that is evaluated and souped (unwrapped, CPU)
  meta.json           schema version, config, base checksum, metrics, epoch, step, trial id, code version
  train_state.pt      optional: optimizer and scheduler state for resuming (tensors only, loaded
                      weights-only); never read by the soup stage
Directories are written under a temporary name and renamed, so a reader never sees half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs

import torch
from safetensors.torch import load_file, save_file

from trainers import __version__
from trainers.uris import is_remote, local_path

WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.pt"
SCHEMA_VERSION = 1


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (temp dir, then rename) and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}, tmp / WEIGHTS)
        full_meta = {"schema_version": SCHEMA_VERSION, "code_version": __version__, **meta}
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint at a local path or any pyarrow.fs URI (s3://, gs://)."""
    directory = str(directory)
    if not is_remote(directory):
        return json.loads((local_path(directory) / META).read_text())
    fs, path = pafs.FileSystem.from_uri(directory)
    with fs.open_input_stream(f"{path}/{META}") as stream:
        return json.loads(stream.readall())


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / WEIGHTS))


def load_checkpoint(directory: str | Path) -> Checkpoint:
    return Checkpoint(load_weights(directory), read_meta(directory))


def load_train_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / TRAIN_STATE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


@contextlib.contextmanager
def local_checkpoint(uri: str) -> Iterator[Path]:
    """A local directory holding the checkpoint at `uri`: the path itself, or for s3:// and gs://
    (anything pyarrow.fs reads) a temporary copy that is removed afterwards."""
    if not is_remote(uri):
        yield local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="soupsweep-checkpoint-") as tmp:
        pafs.copy_files(uri, tmp)
        yield Path(tmp)


def upload_checkpoint(local_dir: str | Path, uri: str) -> None:
    """Copy a local checkpoint directory to `uri` (a no-op when `uri` is that directory)."""
    if is_remote(uri):
        pafs.copy_files(str(Path(local_dir).resolve()), uri)
