"""The anytime soup: the greedy soup over the trials finished so far, kept current during a sweep.

Each finished trial is offered once (offering it again, as a trial replayed after `--resume` does,
returns its first outcome and changes nothing): its checkpoint is read, checked against the shared
initialisation, evaluated on held-out (one pass) and spooled locally. It then takes its place in the
greedy order (held-out accuracy, best first; ties by trial id, as the offline soup sorts its
manifest) and the walk is redone from that place only: the members before it and their sum do not
change, so a trial that lands at position p costs the loads of the members before p and one held-out
pass per candidate after it. So at every moment the soup equals what `soup.greedy` would make
offline from the same trials, and the sweep's soup stage starts from it instead of from zero.

Ray-free: the sweep hosts an `AnytimeSoup` in a Ray actor (sweep.soup_actor); tests use it directly.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from soup.scoring.evaluation import Evaluator
from soup.methods.greedy import GreedyWalk
from soup.inputs.base import Base
from soup.scoring.score import base_reference, check
from soup.inputs.weights import ChangedWeights, Converter, UnreadableWeights, read_weights
from soup.scoring.splits import SplitKind, load_eval_sets
from soup.inputs.statedict import normalise_keys
from soup.inputs.tensorfile import read_tensors
from trainers.model import build_classifier

log = logging.getLogger(__name__)


@dataclass
class Offer:
    """What offering one trial did to the soup. `gain` is what the soup-aware search optimises:
    the change in the soup's held-out accuracy (from the zero-shot model's for the first member),
    0 for a trial that did not become a member."""

    trial_id: str
    order: int  # 0 for the first trial offered
    accepted: bool  # a member of the soup right after this offer
    gain: float
    ingredient_heldout: float  # the trial's own held-out accuracy (nan when it could not be read)
    soup_heldout: float  # the soup's held-out accuracy after the offer
    soup_size: int
    improved: bool  # the soup's held-out accuracy went up
    reason: str = ""  # why a trial was left out before it was evaluated

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    trial_id: str
    heldout: float
    weights: Path  # a local safetensors file of its normalised weights


class AnytimeSoup:
    """The greedy soup over the trials offered so far; holds one model, the held-out set and the sum."""

    def __init__(self, base: Base, device: torch.device, tie_rule: str, tolerance: float, workdir: Path):
        model = build_classifier(base.config.model, len(base.classes))
        heldout = load_eval_sets(base.config.data, model.image_size, device, kinds=[SplitKind.HELDOUT])
        self.evaluator = Evaluator(model, heldout, device, base.config.precision)
        self.reference = base_reference(base)
        self.converter = Converter(base.config.model, base.classes)
        self.tie_rule, self.tolerance, self.workdir = tie_rule, tolerance, workdir
        self.zeroshot_heldout = self.evaluator.heldout_top1(normalise_keys(read_tensors(base.file)), soup=False)
        self.order: list[Candidate] = []  # the greedy order: best held-out first, ties by trial id
        self.walk = GreedyWalk(self.evaluator, tie_rule)
        self.offers: list[Offer] = []

    @property
    def soup_heldout(self) -> float:
        """The soup's held-out accuracy; the zero-shot model's while the soup is empty."""
        return self.zeroshot_heldout if self.walk.best is None else self.walk.best

    @property
    def members(self) -> list[str]:
        return list(self.walk.members)

    @property
    def trace(self) -> list[dict]:
        """The greedy trace of the current soup, as the offline greedy soup writes it."""
        return list(self.walk.trace)

    def offer(self, trial_id: str, checkpoint: str, finished: bool = True) -> Offer:
        """Offer a trial's final checkpoint; one that cannot join the soup is left out with its reason.
        A trial offered before is not offered again: its first outcome is returned, nothing changes."""
        earlier = next((o for o in self.offers if o.trial_id == trial_id), None)
        if earlier is not None:
            log.info("anytime soup: trial %s was offered before (offer %d): not counted again", trial_id, earlier.order)
            return earlier
        before = self.soup_heldout
        try:
            weights = read_weights(checkpoint, self.workdir, self.converter)
        except ChangedWeights as err:
            return self._left_out(trial_id, before, f"changed checkpoint: {err}")
        except (UnreadableWeights, OSError, ValueError) as err:
            return self._left_out(trial_id, before, f"unreadable checkpoint {checkpoint}: {err}")
        problem = check(weights, self.reference, self.tolerance, finished)
        if problem:
            return self._left_out(trial_id, before, problem)
        own = self.evaluator.heldout_top1(weights.state, soup=False)
        place = self._insert(Candidate(trial_id, own, weights.file))
        del weights
        self._rewalk(place)
        after, accepted = self.soup_heldout, trial_id in self.walk.members
        return self._record(Offer(trial_id, len(self.offers), accepted, after - before if accepted else 0.0,
                                  own, after, len(self.walk.members), after > before))

    def _insert(self, candidate: Candidate) -> int:
        key = (-candidate.heldout, candidate.trial_id)
        place = next((i for i, c in enumerate(self.order) if (-c.heldout, c.trial_id) > key), len(self.order))
        self.order.insert(place, candidate)
        return place

    def _rewalk(self, place: int) -> None:
        """Redo the greedy walk from `place`: the steps before it are what they were."""
        kept = self.walk.trace[:place]
        self.walk = walk = GreedyWalk(self.evaluator, self.tie_rule)  # the old sum goes before the new is built
        for row, candidate in zip(kept, self.order):
            if row["accepted"]:
                walk.running.add(self._load(candidate))
                walk.members.append(candidate.trial_id)
        walk.trace = kept
        walk.best = kept[-1]["soup_heldout"] if kept else None
        for candidate in self.order[place:]:
            walk.offer(candidate.trial_id, candidate.heldout, self._load(candidate))

    @staticmethod
    def _load(candidate: Candidate) -> dict[str, torch.Tensor]:
        return normalise_keys(read_tensors(candidate.weights))

    def _left_out(self, trial_id: str, soup_heldout: float, reason: str) -> Offer:
        return self._record(Offer(trial_id, len(self.offers), False, 0.0, float("nan"), soup_heldout,
                                  len(self.walk.members), False, reason))

    def _record(self, offer: Offer) -> Offer:
        self.offers.append(offer)
        log.info("anytime soup: trial %s %s (soup held-out %.4f, %d members)", offer.trial_id,
                 "joined" if offer.accepted else f"not kept{': ' + offer.reason if offer.reason else ''}",
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
        """The soup's state as the sweep's parent run shows it, and as the soup stage starts from it."""
        best = self.order[0] if self.order else None
        return {"members": self.members, "trace": self.trace, "soup_heldout": self.soup_heldout,
                "zeroshot_heldout": self.zeroshot_heldout, "offers": len(self.offers),
                "best_single": best.trial_id if best else "",
                "best_single_heldout": best.heldout if best else float("nan"),
                "trials_without_improvement": self.trials_without_improvement()}
