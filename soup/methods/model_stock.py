"""Model Stock (Jang et al. 2024): per layer, interpolate the average of the fine-tuned models toward
the initialisation by a ratio set by the angle between their fine-tuning deltas.

For k models with deltas δ_i = θ_i - θ_0 and cos θ the mean pairwise cosine between them, the
merged layer is t·mean(θ_i) + (1 - t)·θ_0 with t = k·cos θ / (1 + (k - 1)·cos θ). Deltas that agree
(cos → 1) keep the average; deltas that look like independent noise (cos → 0) fall back to the
initialisation. t is clipped to [0, 1]: a negative cosine would extrapolate beyond θ_0.

Computed tensor by tensor straight into the model (reading each ingredient's tensor from its file),
so memory is the model plus a few tensors of one layer, whatever the number of ingredients. The
mean pairwise cosine comes from the sum of unit deltas u: Σ_{i<j} cos_ij = (|Σ u_i|² - m) / 2.
"""
from __future__ import annotations

import itertools
from typing import Iterable

import torch

from soup.methods.context import MethodResult, SoupContext, lineage
from soup.scoring.evaluation import Scored
from soup.inputs.statedict import LazyState
from soup.inputs.tensorfile import TensorFile


def model_stock(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    base = ctx.base("model_stock")
    files = [TensorFile(s.weights) for s in pool]
    ratios: list[dict] = []

    def value(key: str) -> torch.Tensor:
        first = files[0].get(key)
        if not first.is_floating_point():
            return first  # integer buffers are equal in every ingredient (checked when scored)
        merged, cos, t = merge_layer(base.get(key), itertools.chain([first], (f.get(key) for f in files[1:])))
        ratios.append({"layer": key, "cos": cos, "t": t})
        return merged.to(first.dtype)

    logits = ctx.evaluator.logits(LazyState(ctx.evaluator.targets.keys(), value), soup=True)
    members = [s.trial_id for s in pool]
    weights = ctx.save("model_stock", members, lineage(pool, members))
    mean_t = sum(r["t"] for r in ratios) / max(len(ratios), 1)
    return MethodResult("model_stock", logits, 1, members, weights, tables={"ratios": ratios},
                        metrics={"mean_t": mean_t})


def merge_layer(base: torch.Tensor, tensors: Iterable[torch.Tensor]) -> tuple[torch.Tensor, float | None, float]:
    """One layer of Model Stock: (merged tensor in float32, mean pairwise cosine or None, ratio t).
    `tensors` is consumed one at a time (a generator reading files keeps one in memory)."""
    base64 = base.to(torch.float64)
    total = torch.zeros_like(base64)
    unit_sum = torch.zeros_like(base64)
    moved = k = 0
    for tensor in tensors:
        k += 1
        delta = tensor.to(torch.float64, copy=True)  # a copy: the in-place steps below must not touch the input
        total += delta
        delta -= base64  # in place: a few temporaries of one layer, whatever the number of models
        norm = delta.norm()
        if norm > 0:
            unit_sum.add_(delta, alpha=1 / norm.item())
            moved += 1
    if moved < 2:  # no angle to measure (a frozen layer, or one model moved it): keep the average
        cos, t = None, 1.0
    else:
        cos = ((unit_sum.pow(2).sum() - moved) / (moved * (moved - 1))).item()
        t = min(1.0, max(0.0, k * cos / (1 + (k - 1) * cos))) if cos > 0 else 0.0
    merged = t * (total / k) + (1 - t) * base64
    return merged.to(torch.float32), cos, t
