"""Output ensembles: the mean of ingredients' logits, from the cached evaluations (no forward pass).
They cost one forward pass per member at inference, which the comparison's `cost` column shows."""
from __future__ import annotations

import torch

from soup.methods.context import MethodResult, SelectionPool, SoupContext
from soup.methods.greedy import Greedy
from soup.scoring.evaluation import Scored, accuracy
from soup.scoring.sealed import mean_logits


def ensemble(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    """Output ensemble: the mean of all ingredients' logits."""
    return MethodResult("ensemble", mean_logits([s.logits for s in pool]), len(pool), [s.trial_id for s in pool])


class EnsembleWalk(Greedy):
    """The greedy walk over output ensembles: a candidate is scored by the held-out accuracy of the
    summed held-out logits of the members and itself."""

    def __init__(self, labels: torch.Tensor, tie_rule: str):
        super().__init__(tie_rule)
        self.labels, self.total = labels, None

    def score_with(self, candidate: Scored) -> float:
        return accuracy(self.total + candidate.logits["heldout"], self.labels)

    def add(self, candidate: Scored) -> None:
        held = candidate.logits["heldout"]
        self.total = held.clone() if self.total is None else self.total + held


def greedy_ensemble(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    """Greedy selection over output ensembles: add an ingredient (best held-out first) when the
    held-out accuracy of the mean logits does not drop."""
    ranked = sorted(pool, key=lambda s: s.heldout_top1, reverse=True)
    walk = EnsembleWalk(ctx.evaluator.labels("heldout"), ctx.tie_rule)
    for scored in ranked:
        walk.offer(scored.trial_id, scored.heldout_top1, scored)
    by_id = {s.trial_id: s for s in pool}
    members = [by_id[m] for m in walk.members]
    return MethodResult("greedy_ensemble", mean_logits([s.logits for s in members]), len(members),
                        list(walk.members), trace=walk.trace)
