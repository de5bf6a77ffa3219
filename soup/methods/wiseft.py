"""WiSE-FT (Wortsman et al. 2022): weight-space interpolation (1 - α)·θ_zeroshot + α·θ_target between
the zero-shot model and a fine-tuned one (a soup, or the best single model), over a grid of α.

Every α is evaluated on every set (the α curve); the reported model is the α with the best held-out
accuracy (ties: the smaller α, nearer the zero-shot model). The endpoints are the endpoints' own
weights, bit for bit: α = 0 reproduces the zero-shot model's predictions and α = 1 the target's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from soup.inputs.statedict import LazyState
from soup.inputs.tensorfile import TensorFile
from soup.methods.context import MethodResult, SelectionPool, SoupContext, lineage
from soup.scoring.evaluation import accuracy
from soup.scoring.sealed import SEALED_LONG
from trainers.checkpoint import WEIGHTS


def wiseft(pool: SelectionPool, ctx: SoupContext) -> list[MethodResult]:
    base = ctx.base("wiseft")
    return [alpha_curve(target, pool, ctx, base) for target in ctx.options.wiseft_targets]


def alpha_curve(target: str, pool: SelectionPool, ctx: SoupContext, base: TensorFile) -> MethodResult:
    ev = ctx.evaluator
    file, members = target_weights(target, pool, ctx)
    fine_tuned = TensorFile(file)
    rows, best = [], None
    for alpha in ctx.options.wiseft_alphas:
        logits = ev.logits(interpolation(base, fine_tuned, alpha, ev.targets.keys()), soup=0 < alpha < 1)
        heldout = accuracy(logits["heldout"], ev.labels("heldout"))
        rows.append({"target": target, "alpha": alpha, SEALED_LONG: logits})  # the report adds each set's top-1
        if best is None or heldout > best[1]:
            best = (alpha, heldout, logits)
    alpha, _, logits = best
    name = f"wiseft_{target}"
    ev.load(interpolation(base, fine_tuned, alpha, ev.targets.keys()), soup=0 < alpha < 1)
    weights = ctx.save(name, members, lineage(pool, members), wiseft_alpha=alpha, wiseft_target=target)
    return MethodResult(name, logits, 1, members, weights, tables={"curve": rows}, metrics={"alpha": alpha})


def target_weights(target: str, pool: SelectionPool, ctx: SoupContext) -> tuple[Path, list[str]]:
    """The weights file WiSE-FT interpolates toward, and the ingredients it was made of."""
    if target == "best":
        best = max(pool, key=lambda s: s.heldout_top1)
        return best.weights, [best.trial_id]
    result = ctx.done.get(target)  # the registry runs wiseft after every soup (MethodSpec.after)
    if result is None or result.weights is None:
        raise ValueError(f"WiSE-FT target {target!r} was not made before wiseft ran (with a spool directory)")
    return result.weights / WEIGHTS, result.members


def interpolation(base: TensorFile, fine_tuned: TensorFile, alpha: float, keys) -> LazyState:
    """(1 - α)·base + α·fine_tuned in float32, tensor by tensor; the endpoints are returned as read."""
    def value(key: str) -> torch.Tensor:
        if alpha == 0:
            return base.get(key)
        target = fine_tuned.get(key)
        if alpha == 1 or not target.is_floating_point():
            return target
        return ((1 - alpha) * base.get(key).to(torch.float32) + alpha * target.to(torch.float32)).to(target.dtype)

    return LazyState(keys, value)
