"""The anytime soup: a greedy soup that grows while the sweep runs.

Each finished trial is offered once, in the order trials finish: its checkpoint is read, checked
against the shared initialisation, evaluated on held-out (one pass) and kept if the soup's held-out
accuracy does not drop, exactly as the offline greedy soup walks a list (`GreedyWalk`). So the soup
stage's `anytime` method, run offline over the same trials in the same order, gives the same soup.

Ray-free: the sweep hosts an `AnytimeSoup` in a Ray actor (sweep.anytime); tests use it directly.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from soup.evaluation import Evaluator
from soup.greedy_soup import GreedyWalk
from soup.scoring import Base, base_reference, check
from soup.sources import Converter, UnreadableWeights, read_weights
from soup.splits import SplitKind, load_eval_sets
from soup.statedict import normalise_keys
from soup.tensorfile import read_tensors
from trainers.model import build_classifier

log = logging.getLogger(__name__)


@dataclass
class Offer:
    """What offering one trial did to the soup. `gain` is what the soup-aware search optimises:
    the rise in the soup's held-out accuracy (from the zero-shot model's for the first member),
    0 for a trial that was not kept."""

    trial_id: str
    order: int  # 0 for the first trial offered
    accepted: bool
    gain: float
    ingredient_heldout: float  # the trial's own held-out accuracy (nan when it could not be read)
    soup_heldout: float  # the soup's held-out accuracy after the offer
    soup_size: int
    improved: bool  # the soup's held-out accuracy went up (a tie kept under ">=" is not an improvement)
    reason: str = ""  # why a trial was left out before it was evaluated

    def as_dict(self) -> dict:
        return asdict(self)


class AnytimeSoup:
    """A greedy soup over trials offered one at a time; holds one model and the held-out set."""

    def __init__(self, base: Base, device: torch.device, tie_rule: str, tolerance: float, workdir: Path):
        model = build_classifier(base.config.model, len(base.classes))
        heldout = [s for s in load_eval_sets(base.config.data, model.image_size, device)
                   if s.kind is SplitKind.HELDOUT]
        self.evaluator = Evaluator(model, heldout, device, base.config.precision)
        self.reference = base_reference(base)
        self.converter = Converter(base.config.model, base.classes)
        self.tolerance, self.workdir = tolerance, workdir
        self.walk = GreedyWalk(self.evaluator, tie_rule)
        self.zeroshot_heldout = self.evaluator.heldout_top1(normalise_keys(read_tensors(base.file)), soup=False)
        self.offers: list[Offer] = []

    @property
    def soup_heldout(self) -> float:
        """The soup's held-out accuracy; the zero-shot model's while the soup is empty."""
        return self.zeroshot_heldout if self.walk.best is None else self.walk.best

    def offer(self, trial_id: str, checkpoint: str, finished: bool = True) -> Offer:
        """Offer a trial's final checkpoint to the soup; a checkpoint that cannot join is left out."""
        before, order = self.soup_heldout, len(self.offers)
        try:
            weights = read_weights(checkpoint, self.workdir, self.converter)
        except (UnreadableWeights, OSError, ValueError) as err:
            return self._record(Offer(trial_id, order, False, 0.0, float("nan"), before, len(self.walk.members),
                                      False, f"unreadable checkpoint {checkpoint}: {err}"))
        problem = check(weights, self.reference, self.tolerance, finished)
        if problem:
            return self._record(Offer(trial_id, order, False, 0.0, float("nan"), before, len(self.walk.members),
                                      False, problem))
        own = self.evaluator.heldout_top1(weights.state, soup=False)
        accepted = self.walk.offer(trial_id, own, weights.state)
        if weights.file is not None and weights.file.is_relative_to(self.workdir):
            weights.file.unlink(missing_ok=True)  # the running sum holds what the soup needs
        after = self.soup_heldout
        return self._record(Offer(trial_id, order, accepted, after - before if accepted else 0.0, own, after,
                                  len(self.walk.members), after > before))

    def _record(self, offer: Offer) -> Offer:
        self.offers.append(offer)
        log.info("anytime soup: trial %s %s (soup held-out %.4f, %d members)", offer.trial_id,
                 "kept" if offer.accepted else f"left out{': ' + offer.reason if offer.reason else ''}",
                 offer.soup_heldout, offer.soup_size)
        return offer

    def trials_without_improvement(self) -> int:
        """Offers since the soup's held-out accuracy last went up (all of them if it never did)."""
        count = 0
        for offer in reversed(self.offers):
            if offer.improved:
                break
            count += 1
        return count

    def summary(self) -> dict:
        """The soup's state as the sweep's parent run shows it."""
        evaluated = [o for o in self.offers if o.reason == ""]
        best = max(evaluated, key=lambda o: o.ingredient_heldout, default=None)
        return {"members": list(self.walk.members), "soup_heldout": self.soup_heldout,
                "zeroshot_heldout": self.zeroshot_heldout, "offers": len(self.offers),
                "best_single": best.trial_id if best else "",
                "best_single_heldout": best.ingredient_heldout if best else float("nan"),
                "trials_without_improvement": self.trials_without_improvement()}
