"""Scoring ingredients: read each one once, check it, evaluate it on every set and cache its logits."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from soup.batchnorm import STATS, batchnorm_layers, moved_layers
from soup.evaluation import Evaluator, Scored, accuracy
from soup.ingredients import FINISHED, Ingredient
from soup.screening import Reference, distance_problem, meta_problem, weights_problem
from soup.sources import Converter, UnreadableWeights, Weights, read_weights
from soup.statedict import normalise_keys
from soup.tensorfile import TensorFile
from trainers.config import TrainConfig
from trainers.data.store import read_split

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


@dataclass
class Scoring:
    scored: list[Scored]
    moved_batchnorm: set[str]  # BatchNorm layers some ingredient trained (their statistics moved)


def score_ingredients(candidates: list[Ingredient], base: Base, evaluator: Evaluator, tolerance: float,
                      workdir: Path, skipped: dict[str, str]) -> Scoring:
    """Evaluate each candidate once; record in `skipped` why any is left out."""
    converter = Converter(base.config.model, base.classes)
    reference = base_reference(base) if base.file else None
    layers = list(batchnorm_layers(evaluator.model))
    scored, moved = [], set()
    for ingredient in tqdm(candidates, desc="evaluating ingredients"):
        try:
            weights = read_weights(ingredient.checkpoint, workdir, converter)
        except UnreadableWeights as err:  # the message names the file and what is wrong with it
            _skip(skipped, ingredient, f"unreadable checkpoint: {err}")
            continue
        except Exception as err:  # a missing file, a storage error: leave it out, keep souping the rest
            _skip(skipped, ingredient, f"unreadable checkpoint {ingredient.checkpoint}: {type(err).__name__}: {err}")
            continue
        ref = reference or first_reference(ingredient, weights)
        problem = check(weights, ref, tolerance, ingredient.status == FINISHED)
        if problem:
            _skip(skipped, ingredient, problem)
            continue
        reference = ref
        if layers and ref.file is not None:
            moved |= moved_layers(layers, weights.state, {f"{n}.{s}": ref.file.get(f"{n}.{s}")
                                                          for n in layers for s in STATS})
        logits = evaluator.logits(weights.state)
        scored.append(Scored(ingredient, logits, accuracy(logits["heldout"], evaluator.labels("heldout")),
                             weights.file))
    return Scoring(scored, moved)


def check(weights: Weights, reference: Reference, tolerance: float, finished: bool = True) -> str | None:
    """The first reason to leave these weights out: they do not fit, or they started elsewhere."""
    problem = weights_problem(weights.state, reference)
    if problem:
        return problem
    if weights.meta is not None:
        return meta_problem(weights.meta, reference, finished)
    return distance_problem(weights.state, reference, tolerance)


def base_reference(base: Base) -> Reference:
    file = TensorFile(base.file)
    return Reference.of(normalise_keys(file.load()), file, base.checksum, base.head_init, "base")


def first_reference(ingredient: Ingredient, weights: Weights) -> Reference:
    """Without a base, the first ingredient that loads is what the others must match."""
    meta = weights.meta or {}
    return Reference.of(weights.state, TensorFile(weights.file), meta.get("base_checksum", ""),
                        meta.get("head_init", ""), f"first ingredient ({ingredient.trial_id})")


def _skip(skipped: dict[str, str], ingredient: Ingredient, reason: str) -> None:
    skipped[ingredient.trial_id] = reason
    log.warning("leaving out trial %s: %s", ingredient.trial_id, reason)


def training_images(path: str, image_size: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` training images (a seeded sample) for recomputing BatchNorm statistics."""
    images = read_split(path, image_size).images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[order]
