"""The base model: the one initialisation that every trial of a sweep starts from.

Soups only work for models fine-tuned from one shared initialisation, so the base is built once
(pretrained tower + zero-shot head, or the linear-probe head fitted here on frozen features), written
as a checkpoint and identified by its checksum. Beside the classifier the base directory keeps the
pretrained text tower, which the text losses (FLYP, CaRFT) start from.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from trainers.checkpoint import load_checkpoint, local_checkpoint, save_checkpoint
from trainers.config import TrainConfig
from trainers.data.store import check_dataset
from trainers.errors import UserError
from trainers.evaluate import split_features
from trainers.model import ImageClassifier, build_classifier, build_clip, check_pretrained, state_checksum, \
    text_tower_state, zeroshot_classifier_and_clip
from trainers.tasks import TASKS, Start, fit_linear_probe

log = logging.getLogger(__name__)
TEXT_TOWER = "text_tower.safetensors"


def write_base_checkpoint(cfg: TrainConfig, directory: str | Path, device: torch.device | None = None) -> str:
    """Check the data, build the shared initialisation (`method.init`), save it; returns the base checksum."""
    classes = check_dataset(cfg.data)
    model, clip = pretrained_start(cfg, classes)
    if cfg.method.init == "lp":
        linear_probe_head(cfg, model, device or default_device())
    state = model.state_dict()
    checksum = state_checksum(state)
    meta = {"config": cfg.model_dump(mode="json"), "base_checksum": checksum, "classes": classes,
            "head_init": cfg.method.init, "epoch": 0, "step": 0, "metrics": {}, "trial_id": "base"}
    save_checkpoint(directory, state, meta)
    save_file({k: v.contiguous() for k, v in text_tower_state(clip).items()}, str(Path(directory) / TEXT_TOWER))
    return checksum


def pretrained_start(cfg: TrainConfig, classes: list[str]) -> tuple[ImageClassifier, torch.nn.Module]:
    """The zero-shot classifier and its CLIP. Without pretrained weights the towers are random: built
    from `cfg.seed`, so that the base and the baselines of a config are the same model every time."""
    with seeded(cfg.seed):
        return zeroshot_classifier_and_clip(cfg.model, classes)


def pretrained_clip(cfg: TrainConfig) -> torch.nn.Module:
    """The CLIP `pretrained_start` starts from (the same random towers too: built first from the seed)."""
    with seeded(cfg.seed):
        return build_clip(cfg.model, check_pretrained(cfg.model))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random draws from `seed`, leaving the caller's generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def linear_probe_head(cfg: TrainConfig, model: ImageClassifier, device: torch.device) -> None:
    """Fit the head on the frozen image tower's features of the training set (computed once, no augmentation)."""
    features, labels = split_features(model.to(device), cfg.data.train, device, cfg.precision)
    log.info("fitting the linear-probe init on %d cached training features", len(labels))
    fit_linear_probe(features, labels, model.head, cfg.method.lp_l2, cfg.method.lp_steps)
    model.to("cpu")


def load_start(cfg: TrainConfig, base_uri: str) -> tuple[Start, dict[str, Any]]:
    """What a trial starts from: the base classifier, its classes and (lazily) the text tower; and the base's meta."""
    with local_checkpoint(base_uri) as base_dir:
        base = load_checkpoint(base_dir)
        text_file = Path(base_dir) / TEXT_TOWER
        needs_text = TASKS[cfg.method.name].needs_text
        text = load_file(str(text_file)) if needs_text and text_file.is_file() else None
    require_same_init(cfg, base.meta)
    if needs_text and text is None:
        raise UserError(f"method.name {cfg.method.name} needs the text tower, which the base checkpoint "
                        f"{base_uri} lacks ({TEXT_TOWER}); prepare the base again with this version")
    model = build_classifier(cfg.model, base.state_dict["head.weight"].shape[0])
    model.load_state_dict(base.state_dict)
    classes = base.meta.get("classes") or [str(i) for i in range(model.head.out_features)]
    return Start(cfg, model, classes, lambda: text), base.meta


def require_same_init(cfg: TrainConfig, base_meta: dict[str, Any]) -> None:
    """Every trial must start from the base as prepared: a trial asking for another head init would not soup."""
    prepared = base_meta.get("head_init", "zeroshot")
    if cfg.method.init != prepared:
        raise UserError(f"method.init is {cfg.method.init!r} but the sweep's base was prepared with "
                        f"{prepared!r}; set method.init once for the whole sweep (it cannot be searched)")
