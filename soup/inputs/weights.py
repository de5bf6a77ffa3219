"""Reading an ingredient's weights from wherever they are: our checkpoint directories (local or any
pyarrow.fs URI), bare .safetensors files, and PyTorch files of open_clip models trained elsewhere.

PyTorch files are loaded weights-only (never unpickling arbitrary objects). Keys are normalised
(`module.`, `_orig_mod.`). A whole open_clip CLIP state dict (image and text towers, no head) becomes
our classifier: its image tower plus the zero-shot head its own text tower gives for the classes.
Weights that are not already a local safetensors file with clean keys are written once, as such,
into the soup stage's work directory, so that every later read streams the same way.
Our checkpoints' weights are verified against the sha256 their meta.json recorded (ChangedWeights).
"""
from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from soup.inputs.statedict import normalise_keys
from soup.inputs.tensorfile import TensorFile, TensorFileError
from trainers.checkpoint import META, WEIGHTS, ChangedCheckpoint, local_checkpoint, read_meta, verify_file
from trainers.config import ModelConfig
from trainers.errors import refused_pickle
from trainers.model import build_clip, zeroshot_head
from trainers.uris import is_remote

log = logging.getLogger(__name__)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # open_clip's training checkpoints, and others
TEXT_TOWER_KEYS = ("token_embedding.weight", "text_projection")


class UnreadableWeights(ValueError):
    """A file or directory that holds no weights we can read; the message says what it holds."""


class ChangedWeights(UnreadableWeights):
    """A checkpoint whose weights file is not the one its meta.json's sha256 was computed from."""


@dataclass
class Weights:
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] | None  # meta.json of our checkpoints; None for weights trained elsewhere
    file: Path  # a local safetensors file holding exactly `state`


@dataclass
class Converter:
    """What turning a whole CLIP state dict into our classifier needs."""

    model: ModelConfig
    classes: list[str]


def read_weights(uri: str, workdir: Path, converter: Converter | None = None) -> Weights:
    """The normalised state dict at `uri` (checkpoint directory, .safetensors or PyTorch file)."""
    with local_checkpoint(uri, files=(META, WEIGHTS)) as path:
        if not path.exists():
            raise UnreadableWeights(f"{uri} does not exist: deleted or moved after it was written")
        if path.is_dir():
            if not (path / META).is_file():
                raise UnreadableWeights(f"{path} is a directory without {META}: not a soupsweep checkpoint")
            meta = read_meta(path)
            state = read_safetensors(path / WEIGHTS)  # first: a file that is no safetensors says so
            verified(path, meta)
            return _cached(state, meta, path / WEIGHTS, workdir, uri)
        if path.suffix == ".safetensors":
            return _cached(read_safetensors(path), None, path, workdir, uri)
        if path.suffix in TORCH_SUFFIXES:
            state = as_classifier(read_torch_state(path), converter)
            return _cached(state, None, None, workdir, uri)
    raise UnreadableWeights(f"{uri}: not a checkpoint directory, .safetensors file or PyTorch file "
                            f"({', '.join(TORCH_SUFFIXES)})")


def verified(directory: Path, meta: dict[str, Any]) -> None:
    """Raise ChangedWeights when the checkpoint's weights are not the bytes its digest was made from."""
    try:
        verify_file(directory, WEIGHTS, meta)
    except ChangedCheckpoint as err:
        raise ChangedWeights(str(err)) from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return TensorFile(path).load()
    except (TensorFileError, OSError) as err:
        raise UnreadableWeights(str(err)) from None


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a PyTorch file, loaded weights-only: files that pickle other objects are refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = refused_pickle(path, err) or f"{path}: not a readable PyTorch file (corrupt or another format)"
        raise UnreadableWeights(message) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UnreadableWeights(f"{path}: not a readable PyTorch file ({type(err).__name__}: {err})") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        shown = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise UnreadableWeights(f"{path}: holds no state dict of tensors (found {shown})")
    return normalise_keys(tensors)


def as_classifier(state: dict[str, torch.Tensor], converter: Converter | None) -> dict[str, torch.Tensor]:
    """Our classifier's state: as it is, or built from a whole open_clip CLIP state dict."""
    if "head.weight" in state or not all(k in state for k in TEXT_TOWER_KEYS):
        return state
    if converter is None:
        raise UnreadableWeights("a whole CLIP state dict (no classification head) needs the model "
                                "config and the classes to build its zero-shot head")
    clip = build_clip(converter.model)
    try:
        clip.load_state_dict(state)
    except RuntimeError as err:
        raise UnreadableWeights(f"not a {converter.model.name} CLIP state dict: {str(err).splitlines()[0]}") from None
    head = zeroshot_head(clip, converter.model, converter.classes)  # the prompts the sweep's base used
    log.info("built the zero-shot head of a whole CLIP state dict from its own text tower")
    out = {k: v for k, v in state.items() if k.startswith("visual.")}
    out.update({"head.weight": head.contiguous(), "head.bias": torch.zeros(len(converter.classes))})
    return out


def _cached(state: dict[str, torch.Tensor], meta: dict | None, file: Path | None, workdir: Path,
            uri: str) -> Weights:
    """Weights whose file can be re-read as is, or a normalised copy in the work directory."""
    clean = normalise_keys(state)
    if file is not None and not is_remote(uri) and list(clean) == list(state):
        return Weights(clean, meta, file)
    target = workdir / "ingredients" / f"{hashlib.sha1(uri.encode()).hexdigest()[:16]}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clean.items()}, str(target))
    return Weights(clean, meta, target)
