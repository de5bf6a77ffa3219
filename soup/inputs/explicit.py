"""Ingredients given as paths instead of a sweep: `python -m soup.greedy --ingredients 'dir/*'`.

Each match is a checkpoint directory of ours or a weights file trained elsewhere (.safetensors, or
a PyTorch state dict loaded weights-only). What a sweep would record is taken from the files where
they say it (meta.json of the base or of the first checkpoint) and from the flags otherwise: the
model architecture, the evaluation sets, the classes (from the held-out split).
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

from soup.inputs.manifest import FINISHED, Ingredient
from soup.inputs.base import Base
from soup.inputs.weights import Converter, UnreadableWeights, read_weights
from trainers.checkpoint import META, read_meta
from trainers.config import TrainConfig, validate
from trainers.data.store import read_classes
from trainers.errors import UserError
from trainers.model import state_checksum
from trainers.uris import absolute, has_scheme


@dataclass
class ExplicitInputs:
    patterns: list[str]  # globs of checkpoint directories or weight files
    base: str | None = None  # the shared initialisation: checkpoint directory or weights file
    model: str | None = None  # architecture (model.name); else from a meta.json
    templates: str | None = None
    heldout: str | None = None
    test: str | None = None
    train: str | None = None  # only for recomputing BatchNorm statistics
    shift: dict[str, str] = field(default_factory=dict)


def explicit_ingredients(patterns: list[str]) -> list[Ingredient]:
    """One ingredient per matched path, named by its file or directory name (its path if names clash)."""
    paths: list[str] = []
    for pattern in patterns:
        matched = [pattern] if has_scheme(pattern) else sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matched:
            raise UserError(f"--ingredients {pattern!r} matches nothing; give checkpoint directories or weight "
                            "files (.safetensors, .pt, .pth, .bin), e.g. 'runs/*/checkpoint' or 'weights/*.pt'")
        paths += [absolute(p) for p in matched]
    paths = list(dict.fromkeys(paths))
    names = [Path(p).name if Path(p).is_dir() or has_scheme(p) else Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = paths
    return [Ingredient(name, FINISHED, checkpoint=path) for name, path in zip(names, paths)]


def explicit_base(inputs: ExplicitInputs, ingredients: list[Ingredient], workdir: Path) -> Base:
    """The Base the stage needs: from --base (ours or foreign), the flags, and any meta.json found."""
    base_meta = _meta_of(inputs.base) if inputs.base else None
    cfg = _config(inputs, base_meta or next(filter(None, map(_meta_of, (i.checkpoint for i in ingredients))), None))
    classes = (base_meta or {}).get("classes") or read_classes(cfg.data.heldout)
    if not inputs.base:
        return Base(cfg, classes)
    try:
        weights = read_weights(inputs.base, workdir, Converter(cfg.model, classes))
    except UnreadableWeights as err:
        raise UserError(f"--base: {err}") from None
    checksum = (base_meta or {}).get("base_checksum") or state_checksum(weights.state)
    return Base(cfg, classes, weights.file, checksum, (base_meta or {}).get("head_init", ""), base_meta)


def _config(inputs: ExplicitInputs, meta: dict | None) -> TrainConfig:
    tree = json.loads(json.dumps((meta or {}).get("config") or {}))
    model, data = tree.setdefault("model", {}), tree.setdefault("data", {})
    for key, value in (("name", inputs.model), ("templates", inputs.templates)):
        if value:
            model[key] = value
    for key, value in (("heldout", inputs.heldout), ("test", inputs.test), ("train", inputs.train)):
        if value:
            data[key] = value
    data["shift"] = {**data.get("shift", {}), **inputs.shift}
    if not meta and not inputs.model:
        raise UserError("--model is needed: no meta.json says which architecture these weights are "
                        "(e.g. --model ViT-B-32)")
    cfg = validate(TrainConfig, tree, "soup.greedy flags")
    missing = [f"--{k}" for k in ("heldout", "test") if not getattr(cfg.data, k)]
    if missing:
        raise UserError(f"{' and '.join(missing)} needed: the soup selects on a held-out split and reports on "
                        "a test split (store directories built by python -m trainers.data.build, or Parquet files)")
    return cfg


def _meta_of(path: str) -> dict | None:
    """meta.json of a checkpoint directory (local or URI), or None for a weights file."""
    try:
        return read_meta(path) if has_scheme(path) or (Path(path) / META).is_file() else None
    except (OSError, ValueError):
        return None
