"""The greedy soup (Wortsman et al. 2022, recipe 1) and its spread over random ingredient orders.

Sort by held-out accuracy; add each ingredient if the held-out accuracy of the average does not
drop. A running sum keeps the cost of a candidate at one checkpoint load and one held-out pass.
"""
from __future__ import annotations

import statistics

import torch

from soup.inputs.statedict import RunningSum
from soup.methods.context import MethodResult, SelectionPool, SoupContext, lineage
from soup.scoring.evaluation import Scored, accuracy
from soup.scoring.sealed import SEALED_WIDE


def keeps(score: float, best: float, tie_rule: str) -> bool:
    """The tie rule: `>=` keeps a candidate that ties (the paper's recipe), `>` needs a gain."""
    return score >= best if tie_rule == ">=" else score > best


def trace_row(step: int, trial_id: str, own_heldout: float, candidate: float, best: float, accepted: bool) -> dict:
    return {"step": step, "trial_id": trial_id, "ingredient_heldout": own_heldout,
            "candidate_heldout": candidate, "soup_heldout": best, "accepted": accepted}


class Greedy:
    """The greedy accept loop, the one place it is written: candidates are offered one by one in the
    greedy order; each is kept if the soup's held-out accuracy with it does not drop (the first offer
    always stays). Subclasses say how a candidate is scored with the members and how it is added:
    averaged weights (GreedyWalk: the greedy soup) or summed logits (the greedy ensemble)."""

    def __init__(self, tie_rule: str):
        self.tie_rule = tie_rule
        self.best: float | None = None  # held-out accuracy of the soup; None while it is empty
        self.members: list[str] = []
        self.trace: list[dict] = []

    def score_with(self, candidate) -> float:
        raise NotImplementedError

    def add(self, candidate) -> None:
        raise NotImplementedError

    def offer(self, trial_id: str, own_heldout: float, candidate) -> bool:
        """Here the greedy soup decides whether to keep an ingredient: when the soup's held-out accuracy
        does not drop (the first offer always stays). A trial already walked is not offered again (it
        would count twice): nothing changes."""
        if any(row["trial_id"] == trial_id for row in self.trace):
            return trial_id in self.members
        if self.best is None:
            score, accepted = own_heldout, True
        else:
            score = self.score_with(candidate)
            accepted = keeps(score, self.best, self.tie_rule)
        if accepted:
            self.add(candidate)
            self.members.append(trial_id)
            self.best = score
        self.trace.append(trace_row(len(self.trace), trial_id, own_heldout, score, self.best, accepted))
        return accepted


class GreedyWalk(Greedy):
    """A greedy soup of weights: a running sum of the members. The offline greedy soup walks all
    ingredients at once; the sweep's anytime soup redoes the tail of the walk as trials finish
    (soup.methods.anytime)."""

    def __init__(self, evaluator, tie_rule: str):
        super().__init__(tie_rule)
        self.evaluator = evaluator
        self.running = RunningSum(getattr(evaluator, "device", "cpu"))

    def score_with(self, weights: dict[str, torch.Tensor]) -> float:
        return self.evaluator.heldout_top1(self.running.mean_with(weights), soup=True)

    def add(self, weights: dict[str, torch.Tensor]) -> None:
        self.running.add(weights)


def greedy_select(order: list[Scored], ctx: SoupContext) -> tuple[RunningSum, list[str], list[dict]]:
    """Walk `order`, keeping each candidate whose addition does not lower held-out accuracy."""
    walk = GreedyWalk(ctx.evaluator, ctx.tie_rule)
    for scored in order:
        walk.offer(scored.trial_id, scored.heldout_top1, ctx.load(scored))  # one candidate in memory at a time
    return walk.running, walk.members, walk.trace


def greedy_soup(pool: SelectionPool, ctx: SoupContext) -> MethodResult:
    """The greedy soup of `pool`: the given start (a sweep's anytime soup) when it walked exactly these
    ingredients (not, e.g., when trials stopped early were never offered to it), else a new walk."""
    start = ctx.greedy_start
    if start and walked_exactly(start, pool):
        running, members, trace = rebuild(pool, start["members"], ctx), list(start["members"]), start["trace"]
    else:
        ranked = sorted(pool, key=lambda s: s.heldout_top1, reverse=True)  # stable: ties keep pool order
        running, members, trace = greedy_select(ranked, ctx)
    logits = ctx.evaluator.logits(running.mean_view(), soup=True)
    del running
    result = MethodResult("greedy", logits, 1, members, ctx.save("greedy", members, lineage(pool, members)), trace)
    if ctx.options.greedy_repeats:
        rows = random_orders(pool, ctx)
        result.tables["repeats"] = rows
        result.metrics.update(spread(rows, ["heldout"]))  # the report adds the other sets' spread
    return result


def walked_exactly(start: dict, pool: SelectionPool) -> bool:
    """Whether a greedy start walked each ingredient of `pool` exactly once, and has each member once:
    compared as lists, so that a trial that appears twice (offered again after a resume) never makes
    a start that would weight it double."""
    walked = [row["trial_id"] for row in start["trace"]]
    members = list(start["members"])
    return (sorted(walked) == sorted(s.trial_id for s in pool) and len(set(members)) == len(members)
            and set(members) <= set(walked))


def rebuild(pool: list[Scored], members: list[str], ctx: SoupContext) -> RunningSum:
    """The sum of a soup whose members are known (the sweep's anytime soup): no candidate passes."""
    by_id = {s.trial_id: s for s in pool}
    running = RunningSum(getattr(ctx.evaluator, "device", "cpu"))
    for member in members:
        running.add(ctx.load(by_id[member]))
    return running


def random_orders(pool: list[Scored], ctx: SoupContext) -> list[dict]:
    """Greedy soups over `greedy_repeats` random orders: how much the recipe owes to the sort."""
    rows = []
    for repeat in range(ctx.options.greedy_repeats):
        gen = torch.Generator().manual_seed(ctx.options.greedy_seed + repeat)
        order = [pool[i] for i in torch.randperm(len(pool), generator=gen).tolist()]
        running, members, _ = greedy_select(order, ctx)
        logits = ctx.evaluator.logits(running.mean_view(), soup=True)
        del running
        row = {"repeat": repeat, "order": ",".join(s.trial_id for s in order), "members": ",".join(members),
               "size": len(members)}
        row["heldout/top1"] = accuracy(logits["heldout"], ctx.evaluator.labels("heldout"))
        if len(logits) > 1:
            row[SEALED_WIDE] = logits  # the report fills in test and shift: selection never reads them
        rows.append(row)
    return rows


def spread(rows: list[dict], sets: list[str]) -> dict[str, float]:
    """Mean, standard deviation, min and max over the repeats, per evaluation set."""
    out = {}
    for name in sets:
        values = [row[f"{name}/top1"] for row in rows]
        out.update({f"repeats/{name}/top1_mean": statistics.fmean(values),
                    f"repeats/{name}/top1_std": statistics.pstdev(values),
                    f"repeats/{name}/top1_min": min(values), f"repeats/{name}/top1_max": max(values)})
    return out

