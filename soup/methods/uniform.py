"""The uniform soup: the average of every ingredient's weights, summed one checkpoint at a time."""
from __future__ import annotations

from soup.inputs.statedict import RunningSum
from soup.methods.context import MethodResult, SelectionPool, SoupContext, lineage


def uniform_soup(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    running = RunningSum(getattr(ctx.evaluator, "device", "cpu"))
    for scored in pool:
        running.add(ctx.load(scored))
    logits = ctx.evaluator.logits(running.mean_view(), soup=True)
    del running  # before saving: the sum and the saved copy need not coexist
    members = [s.trial_id for s in pool]
    return MethodResult("uniform", logits, 1, members, ctx.save("uniform", members, lineage(pool, members)))
