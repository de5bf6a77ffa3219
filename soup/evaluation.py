"""Evaluating weights on every evaluation set with one model skeleton, and caching the results."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from soup.ingredients import Ingredient
from soup.splits import EvalSet, SplitKind, require_heldout
from trainers.evaluate import predict
from trainers.model import ImageClassifier


class Evaluator:
    """Loads a state dict into one resident model and returns its logits on the evaluation sets."""

    def __init__(self, model: ImageClassifier, sets: list[EvalSet], device: torch.device, precision: str):
        self.model = model.to(device).eval()
        self.sets = sets
        self.device = device
        self.precision = precision
        self.heldout = require_heldout(next(s for s in sets if s.kind is SplitKind.HELDOUT))

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def logits(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits on every set (the one forward pass per set that a model ever gets)."""
        self._load(state)
        return {s.name: predict(self.model, s.images, self.device, self.precision) for s in self.sets}

    def heldout_top1(self, state: dict[str, torch.Tensor]) -> float:
        """Held-out accuracy only: what a greedy step costs."""
        self._load(state)
        return accuracy(predict(self.model, self.heldout.images, self.device, self.precision), self.heldout.labels)

    def labels(self, name: str) -> torch.Tensor:
        return next(s.labels for s in self.sets if s.name == name)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean().item()


@dataclass
class Scored:
    """An ingredient that loaded and was evaluated once: its cached logits on every set."""

    ingredient: Ingredient
    logits: dict[str, torch.Tensor]
    heldout_top1: float

    @property
    def trial_id(self) -> str:
        return self.ingredient.trial_id
