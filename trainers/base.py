"""The base model: the one initialisation that every trial of a sweep starts from.

Soups only work for models fine-tuned from one shared initialisation, so the base is built once
(pretrained tower + zero-shot head, or the linear-probe head fitted here on frozen features), written
as a checkpoint and identified by its checksum. Beside the classifier the base directory keeps the
pretrained text tower, which the text losses (FLYP, CaRFT) start from.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch
from safetensors.torch import load_file, save_file

from trainers.checkpoint import META, WEIGHTS, load_checkpoint, local_checkpoint, save_checkpoint, verify_file
from trainers.config import ModelConfig, TrainConfig
from trainers.data.store import check_dataset
from trainers.device import resolve_device
from trainers.errors import UserError, refused_pickle
from trainers.evaluate import split_features
from trainers.model import ImageClassifier, build_classifier, build_clip, check_pretrained, state_checksum, \
    text_tower_state, zeroshot_classifier_and_clip
from trainers.tasks import TASKS, Start, fit_linear_probe

log = logging.getLogger(__name__)
TEXT_TOWER = "text_tower.safetensors"


def write_base_checkpoint(cfg: TrainConfig, directory: str | Path, device: torch.device | None = None,
                          extras: Callable[[Path], None] | None = None) -> str:
    """Check the data, build the shared initialisation (`method.init`), save it with the pretrained text
    tower (and what `extras` writes into the directory, all digested); returns the base checksum."""
    classes = check_dataset(cfg.data)
    check_pretrained_weights(cfg.model)
    model, clip = pretrained_start(cfg, classes)
    if cfg.method.init == "lp":
        linear_probe_head(cfg, model, device or resolve_device("auto"))
    state = model.state_dict()
    checksum = state_checksum(state)
    meta = {"config": cfg.model_dump(mode="json"), "base_checksum": checksum, "classes": classes,
            "head_init": cfg.method.init, "epoch": 0, "step": 0, "metrics": {}, "trial_id": "base"}

    def write_text_tower_and_extras(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in text_tower_state(clip).items()}, str(tmp / TEXT_TOWER))
        if extras is not None:
            extras(tmp)

    save_checkpoint(directory, state, meta, extras=write_text_tower_and_extras)
    return checksum


def pretrained_start(cfg: TrainConfig, classes: list[str]) -> tuple[ImageClassifier, torch.nn.Module]:
    """The zero-shot classifier and its CLIP. Without pretrained weights the towers are random: built
    from `cfg.seed`, so that the base and the baselines of a config are the same model every time."""
    with seeded(cfg.seed):
        return zeroshot_classifier_and_clip(cfg.model, classes)


def check_pretrained_weights(cfg: ModelConfig) -> None:
    """A UserError (one line) when `model.pretrained` is a file that does not load into `model.name` (another
    architecture) or one that pickles code. Cheap: the architecture is built on the meta device (nothing
    initialised, only the file read); anything that fails there is tried again for real, for the real error."""
    weights = check_pretrained(cfg)
    if weights is None:
        return
    with torch.random.fork_rng(devices=[]):  # a check: it leaves the random state as it was
        try:
            with torch.device("meta"):
                clip = build_clip(cfg)
            load_weights_into(clip, weights)
        except Exception:  # noqa: BLE001 - the load on CPU below gives the error, or shows the file fits
            load_weights_into(build_clip(cfg), weights, explain=cfg.name)


def load_weights_into(clip: torch.nn.Module, weights: str, explain: str | None = None) -> None:
    """open_clip's own loading (its conversions included); with `explain`, errors become one-line UserErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # copying into meta tensors warns for every tensor
            open_clip.load_checkpoint(clip, weights)
    except Exception as err:  # noqa: BLE001 - whatever the file holds, the user is told which file and why
        if explain is None or isinstance(err, UserError):
            raise
        if isinstance(err, pickle.UnpicklingError):
            raise UserError("model.pretrained: " + (refused_pickle(weights, err) or f"{weights} is not a readable "
                            "PyTorch file (corrupt, or pickled without torch.save)")) from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        detail = lines[1] if lines[0].startswith("Error(s) in loading") and len(lines) > 1 else lines[0]
        raise UserError(f"model.pretrained: {weights} does not fit model.name {explain} ({detail[:300]}); give "
                        f"weights of {explain}, or set model.name to the architecture they were saved from") from None


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


def linear_probe_head(cfg: TrainConfig, model: ImageClassifier, device: torch.device) -> None:
    """Fit the head on the frozen image tower's features of the training set (computed once, no augmentation)."""
    features, labels = split_features(model.to(device), cfg.data.train, device, cfg.precision)
    log.info("fitting the linear-probe init on %d cached training features", len(labels))
    fit_linear_probe(features, labels, model.head, cfg.method.lp_l2, cfg.method.lp_steps)
    model.to("cpu")


def load_start(cfg: TrainConfig, base_uri: str) -> tuple[Start, dict[str, Any]]:
    """What a trial starts from: the base classifier, its classes and (lazily) the text tower; and the base's meta."""
    with local_checkpoint(base_uri, files=(META, WEIGHTS, TEXT_TOWER)) as base_dir:
        base = load_checkpoint(base_dir)
        text_file = Path(base_dir) / TEXT_TOWER
        needs_text = TASKS[cfg.method.name].needs_text
        text = None
        if needs_text and text_file.is_file():
            verify_file(base_dir, TEXT_TOWER, base.meta)  # a changed tower would be trained from silently
            text = load_file(str(text_file))
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
