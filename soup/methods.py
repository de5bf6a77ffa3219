"""Soup and ensemble methods, registered by name. All work on the same cached ingredient evaluations.

A method takes the scored ingredients and a SoupContext and returns a MethodResult: its logits on
every evaluation set, its inference cost (forward passes per image) and, for soups, the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from soup.evaluation import Evaluator, Scored
from soup.ingredients import load_ingredient
from soup.statedict import RunningSum, normalise_keys
from trainers.errors import UserError

TieRule = Literal[">=", ">"]


def load_state(scored: Scored) -> dict[str, torch.Tensor]:
    """Weights of a scored ingredient, loaded again: soups stream checkpoints, one at a time."""
    return normalise_keys(load_ingredient(scored.ingredient.checkpoint).state_dict)


@dataclass
class SoupContext:
    evaluator: Evaluator
    base_state: dict[str, torch.Tensor]  # the shared initialisation (zero-shot model)
    tie_rule: TieRule = ">="  # greedy: the paper's recipe keeps ties; the reference code uses >
    load: Callable[[Scored], dict[str, torch.Tensor]] = load_state


@dataclass
class MethodResult:
    name: str
    logits: dict[str, torch.Tensor]
    cost: int  # forward passes per image at inference
    members: list[str]  # trial ids, in the order they were added
    state: dict[str, torch.Tensor] | None = None  # soup weights, for the methods that make a model
    trace: list[dict] = field(default_factory=list)


def zeroshot(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    return MethodResult("zeroshot", ctx.evaluator.logits(ctx.base_state), 1, [])


def best_single(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    best = max(pool, key=lambda s: s.heldout_top1)
    return MethodResult("best", best.logits, 1, [best.trial_id])


def uniform_soup(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    running = RunningSum()
    for scored in pool:
        running.add(ctx.load(scored))
    state = running.mean()
    return MethodResult("uniform", ctx.evaluator.logits(state), 1, [s.trial_id for s in pool], state)


def greedy_soup(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    """Sort by held-out accuracy; add each ingredient if the soup's held-out accuracy does not drop."""
    ranked = sorted(pool, key=lambda s: s.heldout_top1, reverse=True)
    running, best = RunningSum(), ranked[0].heldout_top1
    running.add(ctx.load(ranked[0]))
    members = [ranked[0].trial_id]
    trace = [{"step": 0, "trial_id": ranked[0].trial_id, "candidate_heldout": best,
              "soup_heldout": best, "accepted": True}]
    for step, scored in enumerate(ranked[1:], start=1):
        candidate = ctx.load(scored)
        score = ctx.evaluator.heldout_top1(running.mean_with(candidate))
        accepted = score >= best if ctx.tie_rule == ">=" else score > best
        if accepted:
            running.add(candidate)
            members.append(scored.trial_id)
            best = score
        trace.append({"step": step, "trial_id": scored.trial_id, "candidate_heldout": score,
                      "soup_heldout": best, "accepted": accepted})
    state = running.mean()
    return MethodResult("greedy", ctx.evaluator.logits(state), 1, members, state, trace)


def ensemble(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    """Output ensemble: the mean of all ingredients' logits, from the cache (no forward pass)."""
    names = pool[0].logits.keys()
    logits = {n: torch.stack([s.logits[n] for s in pool]).mean(0) for n in names}
    return MethodResult("ensemble", logits, len(pool), [s.trial_id for s in pool])


METHODS: dict[str, Callable[[list[Scored], SoupContext], MethodResult]] = {
    "zeroshot": zeroshot,
    "best": best_single,
    "uniform": uniform_soup,
    "greedy": greedy_soup,
    "ensemble": ensemble,
}


def parse_methods(spec: str | list[str]) -> list[str]:
    """'greedy,uniform' or a list -> validated method names, in registry order."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise UserError(f"soup methods: unknown {unknown or 'empty list'}; choose from {list(METHODS)}")
    return [n for n in METHODS if n in names]
