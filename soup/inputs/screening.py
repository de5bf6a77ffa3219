"""Why an ingredient is left out: each check returns a reason a user can read, or None.

Failed, diverged (non-finite loss or weights) and incomplete trials, weights from another
initialisation, weights that do not fit the others, and weights far farther from the base than the
others' (`outliers`: corrupt, e.g. a flipped exponent bit) never enter a soup; the stage logs each
reason and records it in the soup run (`left_out.json`).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from soup.inputs.manifest import USABLE, Ingredient
from soup.inputs.statedict import COUNTERS, IncompatibleIngredient, check_compatible, first_non_finite
from soup.inputs.tensorfile import TensorFile
from trainers.errors import UserError

PARTS = {"image tower": "visual.", "head": "head."}
DEFAULT_OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
MIN_SCREENED = 3  # fewer ingredients than this: no robust spread to judge one against the others
MAD_FLOOR = 0.5  # decades: distances of one sweep's trials differ by their learning rates (up to ~100×)
TINY = 1e-30  # a distance of 0 (weights equal to the base) still has a logarithm


@dataclass
class Reference:
    """What every ingredient is checked against: the shared initialisation, or without one the
    first ingredient that passed (whose file then stands in for the base in the distance check)."""

    shapes: dict[str, torch.Tensor]  # meta tensors: names, shapes and dtypes
    fixed: dict[str, torch.Tensor]  # integer and bool tensors, which soups copy and so must agree
    file: TensorFile | None = None
    checksum: str = ""
    head_init: str = ""
    norms: dict[str, float] = field(default_factory=dict)  # per part, of `file`'s weights
    name: str = "base"

    @property
    def norm(self) -> float:
        """||w|| over the image tower and the head together."""
        return math.sqrt(sum(n * n for n in self.norms.values()))

    @classmethod
    def of(cls, state: dict[str, torch.Tensor], file: TensorFile | None, checksum: str = "",
           head_init: str = "", name: str = "base") -> "Reference":
        shapes = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
        fixed = {k: v.clone() for k, v in state.items() if not v.is_floating_point() and not k.endswith(COUNTERS)}
        norms = {part: math.sqrt(sum(float(v.double().pow(2).sum()) for k, v in state.items()
                                     if k.startswith(prefix) and v.is_floating_point()))
                 for part, prefix in PARTS.items()}
        return cls(shapes, fixed, file, checksum, head_init, norms, name)


def manifest_problem(ingredient: Ingredient, base_checksum: str) -> str | None:
    """What the manifest alone says: not finished, diverged, or another initialisation."""
    if ingredient.status not in USABLE:
        return f"status {ingredient.status}" + (f": {ingredient.reason}" if ingredient.reason else "")
    diverged = _non_finite_metric(ingredient.metrics)
    if diverged:
        return diverged
    if ingredient.base_checksum and base_checksum and ingredient.base_checksum != base_checksum:
        return _other_init(ingredient.base_checksum, base_checksum)
    return None


def meta_problem(meta: dict[str, Any], reference: Reference, finished: bool = True) -> str | None:
    """What a checkpoint's meta.json says: diverged, incomplete, or another initialisation. A trial
    stopped early on purpose (ASHA, time budget: not `finished`) may end before its last epoch."""
    diverged = _non_finite_metric(meta.get("metrics") or {})
    if diverged:
        return diverged
    planned = ((meta.get("config") or {}).get("optim") or {}).get("epochs")
    if finished and planned and meta.get("epoch") is not None and meta["epoch"] < planned:
        return f"incomplete: stopped at epoch {meta['epoch']} of {planned}"
    checksum = meta.get("base_checksum", "")
    if checksum and reference.checksum and checksum != reference.checksum:
        return _other_init(checksum, reference.checksum)
    head_init = meta.get("head_init", "")
    if head_init and reference.head_init and head_init != reference.head_init:
        return (f"different head initialisation ({head_init!r} != {reference.head_init!r}): "
                "soups need one shared initialisation of the head too")
    return None


def weights_problem(state: dict[str, torch.Tensor], reference: Reference) -> str | None:
    """Keys, shapes and dtypes that do not fit, differing integer buffers, non-finite weights."""
    try:
        check_compatible(reference.shapes, state)
    except IncompatibleIngredient as err:
        return f"incompatible weights: {err}"
    differing = [k for k, v in reference.fixed.items() if not torch.equal(v, state[k])]
    if differing:
        return (f"incompatible weights: integer/bool tensors {differing[:5]} differ from the shared "
                "initialisation's (soups copy them, they cannot be averaged)")
    broken = first_non_finite(state)
    return f"diverged: non-finite weights in {broken}" if broken else None


def distance_problem(state: dict[str, torch.Tensor], reference: Reference, tolerance: float) -> str | None:
    """For weights without meta.json: fine-tuning moves weights a small fraction of their norm, so an
    image tower or head farther than `tolerance` (relative) from the reference started elsewhere."""
    if reference.file is None:
        return None
    distances = part_distances(state, reference.file)
    for part in PARTS:
        if part not in distances or not reference.norms.get(part):
            continue
        relative = distances[part] / reference.norms[part]
        if relative > tolerance:
            return (f"different initialisation: its {part} is {relative:.2f}× the {reference.name}'s norm away "
                    f"from the {reference.name} (init tolerance {tolerance}); weights trained from another "
                    "starting point cannot be souped")
    return None


def part_distances(state: dict[str, torch.Tensor], reference: TensorFile) -> dict[str, float]:
    """L2 distance ||w - w_ref|| over the float tensors of each part that has any, and over all of them
    ("all"); the reference is read one tensor at a time."""
    squares: dict[str, float] = {}
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        square = float((value.double() - reference.get(key).double()).pow(2).sum())
        for part in ["all", *(p for p, prefix in PARTS.items() if key.startswith(prefix))]:
            squares[part] = squares.get(part, 0.0) + square
    return {part: math.sqrt(square) for part, square in squares.items()}


def outliers(distances: dict[str, float], threshold: float, base_norm: float | None = None) -> dict[str, str]:
    """trial id -> why, for each ingredient whose distance from the base is far above the others': its
    robust z-score 0.6745·(x − median) / MAD of x = log10(distance) exceeds `threshold` (0: no screen),
    and it moved farther than the base's own norm (when given): fine-tuning from a shared start never
    does, so a trial that trained while most others barely moved (tiny learning rates) is not flagged.
    The MAD is taken as at least MAD_FLOOR so that trials that merely trained with different learning
    rates are not flagged; a flipped exponent bit moves a distance by tens of decades. Needs at least
    MIN_SCREENED ingredients (with fewer, none is judged) and fewer than half of them corrupt."""
    if threshold <= 0 or len(distances) < MIN_SCREENED:
        return {}
    logs = {trial: math.log10(max(d, TINY)) for trial, d in distances.items()}
    median = statistics.median(logs.values())
    mad = max(statistics.median(abs(x - median) for x in logs.values()), MAD_FLOOR)
    found = {}
    for trial, x in logs.items():
        z = 0.6745 * (x - median) / mad
        if z > threshold and (base_norm is None or distances[trial] > base_norm):
            found[trial] = (f"weights far from the base: ||w - w_base|| = {distances[trial]:.4g}, robust z-score "
                            f"{z:.1f} against the {len(logs)} ingredients' (median distance {10 ** median:.4g}; "
                            f"soup.outlier_z {threshold}): corrupt weights (e.g. a flipped bit) or a run that blew up")
    return found


def _non_finite_metric(metrics: dict[str, Any]) -> str | None:
    for name, value in sorted(metrics.items()):
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return f"diverged: {name} = {value}"
    return None


def _other_init(checksum: str, expected: str) -> str:
    return (f"different initialisation (base checksum {checksum[:12]} != {expected[:12]}): "
            "soups need one shared initialisation")


def require_usable(ingredients: list[Ingredient]) -> None:
    """Refuse at once (before any model is built) a sweep none of whose trials can be an ingredient."""
    if not any(i.status in USABLE for i in ingredients):
        reasons = {i.trial_id: manifest_problem(i, "") for i in ingredients}
        raise UserError(f"the sweep has no finished trials ({len(ingredients)} trials: " + listed(reasons)
                        + "); let it finish or run a new sweep before making soups")


def listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in reasons.items())
