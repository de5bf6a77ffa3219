"""Soup and ensemble methods, registered by name. All work on the same cached ingredient evaluations.

A method takes the scored ingredients (best held-out first is not assumed) and a SoupContext and
returns a MethodResult, or a list of them (WiSE-FT gives one per target): logits on every
evaluation set, the inference cost (forward passes per image) and, for soups, the checkpoint the
weights were written to.
"""
from __future__ import annotations

from typing import Callable

import torch

from soup.methods.context import MethodResult, SoupContext, lineage
from soup.scoring.evaluation import Scored, accuracy
from soup.methods.greedy import greedy_soup, keeps, trace_row
from soup.methods.learned import learned_layerwise_soup, learned_soup
from soup.methods.model_stock import model_stock
from soup.inputs.statedict import LazyState, RunningSum
from soup.methods.wiseft import wiseft
from trainers.errors import UserError

def zeroshot(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    """The shared initialisation itself: pretrained image tower and zero-shot head."""
    base = ctx.base("zeroshot")
    return MethodResult("zeroshot", ctx.evaluator.logits(LazyState(base.keys(), base.get)), 1, [])


def best_single(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    best = max(pool, key=lambda s: s.heldout_top1)
    return MethodResult("best", best.logits, 1, [best.trial_id])


def uniform_soup(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    running = RunningSum(getattr(ctx.evaluator, "device", "cpu"))
    for scored in pool:
        running.add(ctx.load(scored))
    logits = ctx.evaluator.logits(running.mean_view(), soup=True)
    del running  # before saving: the sum and the saved copy need not coexist
    members = [s.trial_id for s in pool]
    return MethodResult("uniform", logits, 1, members, ctx.save("uniform", members, lineage(pool, members)))


def ensemble(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    """Output ensemble: the mean of all ingredients' logits, from the cache (no forward pass)."""
    return MethodResult("ensemble", mean_logits(pool), len(pool), [s.trial_id for s in pool])


def greedy_ensemble(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    """Greedy selection over output ensembles: add an ingredient (best held-out first) when the
    held-out accuracy of the mean logits does not drop. Cached logits only: no forward pass."""
    ranked = sorted(pool, key=lambda s: s.heldout_top1, reverse=True)
    labels = ctx.evaluator.labels("heldout")
    members, total, best = [ranked[0]], ranked[0].logits["heldout"].clone(), ranked[0].heldout_top1
    trace = [trace_row(0, ranked[0].trial_id, best, best, best, True)]
    for step, scored in enumerate(ranked[1:], start=1):
        candidate = total + scored.logits["heldout"]
        score = accuracy(candidate, labels)
        accepted = keeps(score, best, ctx.tie_rule)
        if accepted:
            members, total, best = [*members, scored], candidate, score
        trace.append(trace_row(step, scored.trial_id, scored.heldout_top1, score, best, accepted))
    return MethodResult("greedy_ensemble", mean_logits(members), len(members), [s.trial_id for s in members],
                        trace=trace)


def mean_logits(pool: list[Scored]) -> dict[str, torch.Tensor]:
    return {n: torch.stack([s.logits[n] for s in pool]).mean(0) for n in pool[0].logits}


Method = Callable[[list[Scored], SoupContext], "MethodResult | list[MethodResult]"]
METHODS: dict[str, Method] = {
    "zeroshot": zeroshot,
    "best": best_single,
    "uniform": uniform_soup,
    "greedy": greedy_soup,
    "learned": learned_soup,
    "learned_layerwise": learned_layerwise_soup,
    "model_stock": model_stock,
    "wiseft": wiseft,  # after the soups it interpolates toward
    "ensemble": ensemble,
    "greedy_ensemble": greedy_ensemble,
}


def parse_methods(spec: str | list[str]) -> list[str]:
    """'greedy,uniform' or a list -> validated method names, in registry order."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise UserError(f"soup methods: unknown {unknown or 'empty list'}; choose from {list(METHODS)}")
    return [n for n in METHODS if n in names]
