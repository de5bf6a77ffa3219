"""The checkpoint format, defined once.

A checkpoint is a directory:
  model.safetensors   weights of the classifier that is evaluated and souped (unwrapped, CPU)
  meta.json           schema version, config, base checksum, metrics, epoch, step, trial id, code version,
                      and `sha256`: the digest of each file above, computed once the file was complete
  train_state.pt      optional: optimizer and scheduler state for resuming (tensors only, loaded
                      weights-only); never read by the soup stage
  ...                 a base checkpoint also keeps the pretrained text tower and the training-free
                      baselines here (trainers/base.py), digested like the files above
Directories are written under a temporary name and renamed, so a reader never sees half of one.
Readers verify a file against its digest before using it (`verify_file`): bytes changed in storage
are refused, not trained on or souped. Checkpoints of schema 1 (before digests) are accepted with a
warning: nothing can say whether their bytes changed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pyarrow.fs as pafs

import torch
from safetensors.torch import load_file, save_file

from trainers import __version__
from trainers.owner import left_by_killed, staging_name
from trainers.uris import is_remote, local_path

WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.pt"
SCHEMA_VERSION = 2  # 2: meta.json records the sha256 of every file (DIGESTS)
DIGESTS = "sha256"  # meta.json key: {file name: hex sha256 of that file}
ALWAYS_DIGESTED = (WEIGHTS, TRAIN_STATE)  # save_checkpoint digests them whenever it writes them (schema 2)

log = logging.getLogger(__name__)


class ChangedCheckpoint(ValueError):
    """A checkpoint file whose bytes are not those its meta.json's digest was computed from."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None,
                    extras: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint directory atomically (temp dir, then rename) and return its path. `extras`
    writes further files into the directory before the digests are taken, so they are verified too."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in left_by_killed(os.listdir(directory.parent), directory.name):  # a killed writer's
        shutil.rmtree(directory.parent / stale, ignore_errors=True)
    tmp = directory.parent / staging_name(directory.name)
    tmp.mkdir()
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}, tmp / WEIGHTS)
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        if extras is not None:
            extras(tmp)
        digests = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}  # each file complete by now
        full_meta = {"schema_version": SCHEMA_VERSION, "code_version": __version__, **meta, DIGESTS: digests}
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
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
    """Weights and meta.json of a local checkpoint; raises ChangedCheckpoint when the weights changed."""
    meta = read_meta(directory)
    verify_file(directory, WEIGHTS, meta)
    return Checkpoint(load_weights(directory), meta)


def load_train_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        return None
    verify_file(directory, TRAIN_STATE, read_meta(directory))
    return torch.load(path, map_location="cpu", weights_only=True)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (never the whole file in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_file(directory: str | Path, name: str, meta: dict[str, Any]) -> bool:
    """Check file `name` of a local checkpoint against the sha256 its meta.json recorded: True when it
    matches, False (with a warning) when meta.json records none (written before that file was digested);
    raises ChangedCheckpoint, naming the file and both digests, when its bytes changed, and when a
    meta.json of schema 2 lacks the digest that schema always records (the digest was removed)."""
    path = Path(directory) / name
    recorded = (meta.get(DIGESTS) or {}).get(name)
    if not recorded and name in ALWAYS_DIGESTED and meta.get("schema_version", 1) >= SCHEMA_VERSION:
        raise ChangedCheckpoint(f"{path}: its meta.json (schema {meta['schema_version']}, which always records "
                                f"the sha256 of {name}) records none: meta.json was edited, so nothing says "
                                "whether the weights changed")
    if not recorded:
        log.warning("%s: meta.json records no sha256 of it (written by soupsweep %s, before this file was "
                    "digested): used without verifying its bytes", path, meta.get("code_version", "?"))
        return False
    actual = file_sha256(path)
    if actual != recorded:
        raise ChangedCheckpoint(f"{path} changed after it was written: its sha256 is {actual[:16]}…, meta.json "
                                f"recorded {recorded[:16]}… (damaged storage or an edited file)")
    return True


@contextlib.contextmanager
def local_checkpoint(uri: str, files: Sequence[str] | None = None) -> Iterator[Path]:
    """A local directory holding the checkpoint at `uri`: the path itself, or for s3:// and gs://
    (anything pyarrow.fs reads) a temporary copy that is removed afterwards. With `files`, only those
    of a remote checkpoint directory are copied (those it has): readers of the weights leave
    train_state.pt, twice the weights' size with AdamW, where it is."""
    if not is_remote(uri):
        yield local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="soupsweep-checkpoint-") as tmp:
        fs, path = pafs.FileSystem.from_uri(uri)
        if files is None or fs.get_file_info(path).type != pafs.FileType.Directory:
            pafs.copy_files(uri, tmp)
        else:
            for info in fs.get_file_info([f"{path}/{name}" for name in files]):
                if info.type == pafs.FileType.File:
                    pafs.copy_files(info.path, f"{tmp}/{info.base_name}", source_filesystem=fs)
        yield Path(tmp)


def upload_checkpoint(local_dir: str | Path, uri: str) -> None:
    """Copy a local checkpoint directory to `uri` (a no-op when `uri` is that directory)."""
    if is_remote(uri):
        pafs.copy_files(str(Path(local_dir).resolve()), uri)
