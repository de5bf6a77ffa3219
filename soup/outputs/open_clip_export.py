"""A soup taken out of soupsweep: a whole open_clip model that open_clip loads on its own.

DIR/open_clip_model.safetensors   the CLIP state dict: the souped image tower + the base's text tower
DIR/open_clip_config.json         {"model_cfg", "preprocess_cfg"}: what open_clip's local-dir: reads
DIR/zeroshot_head.safetensors     the soup's class head (weight, bias) on normalised image features
DIR/soupsweep.json                the architecture, the classes, the soup method and its ingredient runs
DIR/tokenizer files               a Hugging Face tokenizer's (tokenizer.json, ...), where the model has one:
                                  open_clip's local-dir: reads it from the directory

Load it with `open_clip.create_model_and_transforms("local-dir:DIR")`, or for a built-in
architecture `create_model_and_transforms(arch, pretrained="DIR/open_clip_model.safetensors")`.
The text tower is the base's: the pretrained one (rebuilt from the config and its seed, exactly as
the sweep's base was), since soups average image towers only.
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
from safetensors.torch import save_file

from trainers.base import pretrained_clip
from trainers.checkpoint import load_checkpoint
from trainers.config import TrainConfig
from trainers.model import preprocess_stats, tokenizer_for
from trainers.owner import staged_directory

MODEL_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"
HEAD_FILE = "zeroshot_head.safetensors"
INFO_FILE = "soupsweep.json"


def export_open_clip(soup_checkpoint: str | Path, directory: str | Path) -> Path:
    """Write the soup checkpoint `soup_checkpoint` as an open_clip model in `directory` (atomically).
    The options checked that `directory` was new before any soup was made; one that appeared since is
    kept as it is, and the soup run that holds the soups ends FAILED (not deleted, as a UserError's)."""
    directory = Path(directory).expanduser().resolve()
    if directory.exists():
        raise _appeared(directory)
    soup = load_checkpoint(soup_checkpoint)
    cfg = TrainConfig.model_validate(soup.meta["config"])
    clip = pretrained_clip(cfg)
    visual = {k.removeprefix("visual."): v for k, v in soup.state_dict.items() if k.startswith("visual.")}
    clip.visual.load_state_dict(visual)  # strict: the soup's image tower is this architecture's
    try:
        with staged_directory(directory) as tmp:
            save_file({k: v.detach().contiguous() for k, v in clip.state_dict().items()}, tmp / MODEL_FILE)
            save_file({"weight": soup.state_dict["head.weight"].contiguous(),
                       "bias": soup.state_dict["head.bias"].contiguous()}, tmp / HEAD_FILE)
            _write_json(tmp / CONFIG_FILE, open_clip_config(cfg, clip))
            _write_json(tmp / INFO_FILE, export_info(cfg, soup.meta))
            save_tokenizer(cfg, tmp)
    except OSError as err:
        if directory.exists():  # made by someone else while the export was written: theirs is kept
            raise _appeared(directory) from err
        raise
    return directory


def export_line(directory: str, method: str) -> str:
    """What the command prints after exporting: where the model is and how to load it."""
    path = Path(directory).expanduser().resolve()
    return (f"the {method} soup as an open_clip model: {path}\n  load it with "
            f"open_clip.create_model_and_transforms(\"local-dir:{path}\") (docs/models.md)")


def _appeared(directory: Path) -> FileExistsError:
    return FileExistsError(f"export_open_clip: {directory} appeared while the soups were made and is left as it "
                           "is; run again with a new directory")


def open_clip_config(cfg: TrainConfig, clip) -> dict:
    """The model and preprocessing config as open_clip's local-dir: and push_to_hf_hub lay them out."""
    from trainers.architectures import model_config

    mean, std = preprocess_stats(clip)
    preprocess = {**clip.visual.preprocess_cfg, "mean": list(mean), "std": list(std)}
    return {"model_cfg": model_config(cfg.model.name), "preprocess_cfg": preprocess}


def save_tokenizer(cfg: TrainConfig, directory: Path) -> None:
    """A Hugging Face tokenizer's files, as open_clip's push_to_hf_hub saves them (open_clip's own
    SimpleTokenizer has none: it is part of open_clip)."""
    tokenizer = tokenizer_for(cfg.model)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(directory))


def export_info(cfg: TrainConfig, meta: dict) -> dict:
    name = cfg.model.name
    built_in = name in open_clip.list_models()
    lineage = meta.get("lineage", {})
    members = meta.get("members", list(lineage))
    return {"architecture": name if built_in else None,
            "load_with": "local-dir:<this directory>" + ("" if not built_in else f" or {name} + pretrained={MODEL_FILE}"),
            "classes": meta["classes"], "soup_method": meta.get("method"),
            "ingredients": [{"trial": m, "mlflow_run_id": lineage.get(m, "")} for m in members],
            "text_tower": cfg.model.pretrained or f"as built from {name} (no model.pretrained; seed {cfg.seed})",
            "head": f"{HEAD_FILE}: logits = normalize(model.encode_image(x)) @ weight.T + bias"}


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2))
