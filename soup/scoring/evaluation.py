"""Evaluating weights on every evaluation set with one resident model, and caching the results."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from soup.inputs.base import Base
from soup.inputs.manifest import Ingredient
from soup.scoring.sealed import HELDOUT, Sealed, SelectionLeak
from soup.scoring.splits import EvalSet, SplitKind, load_eval_sets
from trainers.evaluate import predict
from trainers.metrics import top1
from trainers.model import build_classifier


class Evaluator:
    """Copies weights into one resident model and returns its logits on the evaluation sets.

    Weights are copied tensor by tensor, so a lazy state (an average, an interpolation) is computed
    straight into the model. Soups made of models with BatchNorm get their statistics recomputed
    (`recalibrate`) before they are evaluated; single ingredients keep their own."""

    def __init__(self, model: nn.Module, sets: list[EvalSet], device: torch.device, precision: str,
                 recalibrate: Callable[[nn.Module], None] | None = None, batch_size: int = 256):
        self.model = model.to(device).eval()
        self.batch_size = batch_size  # images per forward pass: the activations' share of memory
        self.targets = self.model.state_dict()  # shares storage with the model: copy_ loads in place
        self.sets = sets
        self.device = device
        self.precision = precision
        self.recalibrate = recalibrate
        self.heldout = next(s for s in sets if s.kind is SplitKind.HELDOUT)

    def load(self, state: Mapping[str, torch.Tensor], soup: bool = False) -> None:
        with torch.no_grad():
            for key, target in self.targets.items():
                target.copy_(state[key])
        if soup and self.recalibrate is not None:
            self.recalibrate(self.model)

    def predict_all(self) -> dict[str, torch.Tensor]:
        """Logits of the loaded weights on every set (the one forward pass per set a model gets)."""
        return {s.name: s.project(predict(self.model, s.images, self.device, self.precision, self.batch_size))
                for s in self.sets}

    def logits(self, state: Mapping[str, torch.Tensor], soup: bool = False) -> dict[str, torch.Tensor]:
        self.load(state, soup)
        return self.predict_all()

    def heldout_top1(self, state: Mapping[str, torch.Tensor], soup: bool = True) -> float:
        """Held-out accuracy only: what a greedy step costs."""
        self.load(state, soup)
        logits = predict(self.model, self.heldout.images, self.device, self.precision, self.batch_size)
        return top1(self.heldout.project(logits), self.heldout.labels)

    def labels(self, name: str) -> torch.Tensor:
        return next(s.labels for s in self.sets if s.name == name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The loaded weights on the CPU, for saving (no copy when evaluating on the CPU)."""
        return {k: v.detach().to("cpu") for k, v in self.targets.items()}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return top1(logits, labels.to(logits.device))


class HeldoutOnly:
    """The Evaluator as soup methods see it: the same calls, but logits come `Sealed` (only the held-out
    set readable) and only held-out labels are given, so that no method can select on test or shift."""

    def __init__(self, evaluator: Evaluator):
        self._evaluator = evaluator

    def __getattr__(self, name: str):
        if name == "sets":
            raise SelectionLeak("soup methods get the held-out set only (evaluator.heldout)")
        return getattr(self._evaluator, name)

    def logits(self, state: Mapping[str, torch.Tensor], soup: bool = False) -> Sealed:
        return Sealed(self._evaluator.logits(state, soup))

    def labels(self, name: str) -> torch.Tensor:
        if name != HELDOUT:
            raise SelectionLeak(f"soup methods may read the heldout labels only, not {name!r}")
        return self._evaluator.labels(name)


@dataclass
class Scored:
    """An ingredient that loaded and was evaluated once: its cached logits on every set."""

    ingredient: Ingredient
    logits: Mapping[str, torch.Tensor]  # Sealed in the pool that methods get: held-out only
    heldout_top1: float
    weights: Path | None = None  # a local safetensors file of its weights, read again by the soups

    @property
    def trial_id(self) -> str:
        return self.ingredient.trial_id


def build_evaluator(base: Base, device: torch.device) -> Evaluator:
    """One resident model of the base's architecture and the evaluation sets, on `device`."""
    model = build_classifier(base.config.model, len(base.classes))
    return Evaluator(model, load_eval_sets(base.config.data, model.image_size, device), device, base.config.precision)
