"""Evaluation sets as a type: selection code may only look at `heldout`."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Collection

import torch

from trainers.config import DataConfig
from trainers.data.cache import covers_mask, load_eval_set, project_logits


class SplitKind(enum.Enum):
    # The selection split: best model, greedy soup/ensemble order and acceptance, the anytime soup (and
    # soup_gain), WiSE-FT's α, the learned soups' weights, Tip-Adapter's α/β. Its scores are shown
    # apart, as selection scores, never as results (docs/config.md, "What held-out selects").
    HELDOUT = "heldout"
    TEST = "test"  # in-distribution report
    SHIFT = "shift"  # distribution-shift report


@dataclass
class EvalSet:
    name: str  # "heldout", "test", "shift/<name>"
    kind: SplitKind
    images: torch.Tensor  # uint8 (N, 3, S, S), kept on the evaluation device
    labels: torch.Tensor
    covers: torch.Tensor | None = None  # bool (classes,): the classes a subset set covers; None: all

    def project(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits projected onto the covered classes (the others can be neither predicted nor scored)."""
        return project_logits(logits, self.covers)


def load_eval_sets(data: DataConfig, image_size: int, device: torch.device,
                   kinds: Collection[SplitKind] = tuple(SplitKind)) -> list[EvalSet]:
    """heldout, test and every shift set (those of `kinds`), decoded and centre-cropped once, kept on
    `device` as uint8."""
    named = [("heldout", SplitKind.HELDOUT, data.heldout), ("test", SplitKind.TEST, data.test)]
    named += [(f"shift/{name}", SplitKind.SHIFT, path) for name, path in sorted(data.shift.items())]
    sets = []
    for name, kind, path in (n for n in named if n[1] in kinds):
        cached = load_eval_set(path, image_size, device)
        covers = covers_mask(cached.classes, cached.covers)
        sets.append(EvalSet(name, kind, cached.images, cached.labels, None if covers is None else covers.to(device)))
    return sets

