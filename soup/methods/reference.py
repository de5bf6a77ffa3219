"""The two models that exist without souping, reported beside the soups: the zero-shot model and the
best single trial (on held-out)."""
from __future__ import annotations

from soup.inputs.statedict import LazyState
from soup.methods.context import MethodResult, SelectionPool, SoupContext


def zeroshot(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    """The shared initialisation itself: pretrained image tower and zero-shot head."""
    base = ctx.base("zeroshot")
    return MethodResult("zeroshot", ctx.evaluator.logits(LazyState(base.keys(), base.get)), 1, [])


def best_single(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    best = max(pool, key=lambda s: s.heldout_top1)
    return MethodResult("best", best.logits, 1, [best.trial_id])
