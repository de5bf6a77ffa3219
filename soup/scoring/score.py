"""Scoring ingredients: read each one once, check it, evaluate it on every set and cache its logits."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from soup.scoring.batchnorm import STATS, batchnorm_layers, moved_layers
from soup.scoring.evaluation import Evaluator, Scored, accuracy
from soup.inputs.base import Base
from soup.inputs.manifest import FINISHED, Ingredient
from soup.scoring.parallel import RemoteEvaluation, start_remote
from soup.inputs.screening import (DEFAULT_OUTLIER_Z, MIN_SCREENED, Reference, distance_problem, meta_problem, outliers,
                                   part_distances, weights_problem)
from soup.inputs.weights import ChangedWeights, Converter, UnreadableWeights, Weights, read_weights
from soup.inputs.statedict import normalise_keys
from soup.inputs.tensorfile import TensorFile, read_tensors

log = logging.getLogger(__name__)


@dataclass
class Scoring:
    scored: list[Scored]
    moved_batchnorm: set[str]  # BatchNorm layers some ingredient trained (their statistics moved)


def score_ingredients(candidates: list[Ingredient], base: Base, evaluator: Evaluator, tolerance: float,
                      workdir: Path, skipped: dict[str, str], eval_workers: int | str = 0,
                      outlier_z: float = DEFAULT_OUTLIER_Z) -> Scoring:
    """Evaluate each candidate once; record in `skipped` why any is left out. `eval_workers` (see
    soup.scoring.parallel.worker_count): Ray workers that run the forward passes while this process reads and
    checks every candidate; 0: all in this process. `outlier_z`: the weight screen (screening.outliers)."""
    remote = start_remote([c.checkpoint for c in candidates], base.config, base.classes, eval_workers)
    try:
        checked, moved = check_candidates(candidates, base, evaluator, tolerance, workdir, skipped,
                                          evaluate=remote is None, outlier_z=outlier_z)
        if remote is not None:
            checked = remote_logits(remote, checked, evaluator, skipped)
    finally:
        if remote is not None:
            remote.close()
    heldout = evaluator.labels("heldout")
    return Scoring([Scored(c.ingredient, c.logits, accuracy(c.logits["heldout"], heldout), c.file)
                    for c in checked], moved)


@dataclass
class Checked:
    """A candidate that read and fits: its place among the candidates, its spooled weights, its logits."""

    index: int
    ingredient: Ingredient
    file: Path
    logits: dict[str, torch.Tensor] | None = None  # None until evaluated (by a Ray worker)
    moved: set[str] = field(default_factory=set)  # its BatchNorm layers whose statistics moved
    distance: float = 0.0  # ||w - w_base|| over its float tensors (0 when there is no base)


def check_candidates(candidates: list[Ingredient], base: Base, evaluator: Evaluator, tolerance: float,
                     workdir: Path, skipped: dict[str, str], evaluate: bool,
                     outlier_z: float = DEFAULT_OUTLIER_Z) -> tuple[list[Checked], set[str]]:
    """Read and check every candidate once (evaluating it too, when `evaluate`), then screen their
    distances from the base; also the BatchNorm layers whose statistics some kept ingredient moved."""
    converter = Converter(base.config.model, base.classes)
    reference = base_reference(base) if base.file else None
    layers = list(batchnorm_layers(evaluator.model))
    checked: list[Checked] = []
    for index, ingredient in enumerate(tqdm(candidates, desc="evaluating ingredients" if evaluate
                                            else "reading and checking ingredients")):
        if any(c.ingredient.trial_id == ingredient.trial_id for c in checked):
            log.warning("trial %s is listed twice: it is an ingredient once", ingredient.trial_id)
            continue
        weights = _read(ingredient, workdir, converter, skipped)
        if weights is None:
            continue
        ref = reference or first_reference(ingredient, weights)
        problem = check(weights, ref, tolerance, ingredient.status == FINISHED)
        if problem:
            _skip(skipped, ingredient, problem)
            continue
        reference = ref
        entry = Checked(index, ingredient, weights.file, evaluator.logits(weights.state) if evaluate else None)
        if layers and ref.file is not None:
            entry.moved = moved_layers(layers, weights.state, {f"{n}.{s}": ref.file.get(f"{n}.{s}")
                                                               for n in layers for s in STATS})
        if base.file and outlier_z:
            entry.distance = part_distances(weights.state, ref.file).get("all", 0.0)
        checked.append(entry)
    checked = screened(checked, outlier_z, skipped, reference) if base.file else checked
    return checked, set().union(*(c.moved for c in checked))


def screened(checked: list[Checked], outlier_z: float, skipped: dict[str, str],
             base: Reference | None) -> list[Checked]:
    """The checked candidates but those whose distance from the base is an outlier (screening.outliers);
    without a base (explicit ingredients without --base) the stage does not screen."""
    if outlier_z and len(checked) < MIN_SCREENED:
        log.info("weight screen: %d ingredients, fewer than %d: not screened", len(checked), MIN_SCREENED)
    far = outliers({c.ingredient.trial_id: c.distance for c in checked}, outlier_z, base.norm if base else None)
    for entry in checked:
        if entry.ingredient.trial_id in far:
            _skip(skipped, entry.ingredient, far[entry.ingredient.trial_id])
    return [c for c in checked if c.ingredient.trial_id not in far]


def remote_logits(remote: RemoteEvaluation, checked: list[Checked], evaluator: Evaluator,
                  skipped: dict[str, str]) -> list[Checked]:
    """The checked candidates with the logits their Ray worker computed, as results arrive; a candidate
    whose worker failed is evaluated in this process from its spooled weights (or left out, saying why)."""
    by_index = {c.index: c for c in checked}
    for index, result in tqdm(remote.results(list(by_index)), total=len(by_index),
                              desc=f"evaluating ingredients on {len(remote.actors)} Ray workers"):
        entry = by_index[index]
        if not isinstance(result, Exception):
            entry.logits = {name: t.to(evaluator.device) for name, t in result.items()}
            continue
        log.warning("the Ray worker evaluating trial %s failed (%s): evaluating it in this process",
                    entry.ingredient.trial_id, _first_line(result))
        try:
            entry.logits = evaluator.logits(normalise_keys(read_tensors(entry.file)))
        except Exception as err:
            _skip(skipped, entry.ingredient, f"evaluation failed on a Ray worker ({_first_line(result)}) "
                  f"and in this process ({type(err).__name__}: {err})")
    return [c for c in checked if c.logits is not None]


def _read(ingredient: Ingredient, workdir: Path, converter: Converter, skipped: dict[str, str]) -> Weights | None:
    try:
        return read_weights(ingredient.checkpoint, workdir, converter)
    except ChangedWeights as err:  # its bytes are not those it was written with
        _skip(skipped, ingredient, f"changed checkpoint: {err}")
    except UnreadableWeights as err:  # the message names the file and what is wrong with it
        _skip(skipped, ingredient, f"unreadable checkpoint: {err}")
    except Exception as err:  # a missing file, a storage error: leave it out, keep souping the rest
        _skip(skipped, ingredient, f"unreadable checkpoint {ingredient.checkpoint}: {type(err).__name__}: {err}")
    return None


def _first_line(err: Exception) -> str:
    """What went wrong on a worker, in one line (a RayTaskError carries the worker's exception as `cause`)."""
    cause = getattr(err, "cause", None) or err
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


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

