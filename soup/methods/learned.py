"""Learned soups (Wortsman et al. 2022, appendix): mixing weights optimised on held-out data.

`learned` has one weight per ingredient, `learned_layerwise` one per ingredient and tensor. Weights
are a softmax over ingredients (the soup stays in their convex hull, and starts as the uniform
soup); a temperature scales the logits in the loss, learned with them, as in the paper.

Memory stays bounded whatever the number of ingredients: the gradient of the loss with respect to
a mixing weight is the inner product of the gradient with respect to the soup's weights and that
ingredient's weights, so one step builds the soup in the model tensor by tensor (reading each
ingredient's tensor from its file), takes one held-out forward/backward pass, and streams the
ingredients again for the inner products: the model, its gradient and one tensor per ingredient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from soup.methods.context import MethodResult, SoupContext, lineage
from soup.scoring.evaluation import Scored
from soup.inputs.statedict import LazyState
from soup.inputs.tensorfile import TensorFile
from trainers.evaluate import autocast_for

def learned_soup(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    return _learned("learned", pool, ctx, per_layer=False)


def learned_layerwise_soup(pool: list[Scored], ctx: SoupContext) -> MethodResult:
    return _learned("learned_layerwise", pool, ctx, per_layer=True)


def _learned(name: str, pool: list[Scored], ctx: SoupContext, per_layer: bool) -> MethodResult:
    ev = ctx.evaluator
    files = [TensorFile(s.weights) for s in pool]
    keys = [k for k, v in ev.targets.items() if v.is_floating_point()]
    mixing = torch.zeros(len(pool), len(keys) if per_layer else 1, requires_grad=True)
    log_temperature = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([mixing, log_temperature], lr=ctx.options.learned_lr)
    trace = []
    for step in range(ctx.options.learned_steps):
        optimizer.zero_grad()
        alphas = torch.softmax(mixing, dim=0)
        ev.load(mixed(files, ev.targets, keys, alphas.detach()))
        loss, top1 = heldout_gradient(ev, log_temperature)
        (alphas * inner_products(ev, files, keys)).sum().backward()  # chain rule into the mixing logits
        optimizer.step()
        trace.append({"step": step, "heldout_loss": loss, "heldout_top1": top1,
                      "temperature": math.exp(log_temperature.item())})
    alphas = torch.softmax(mixing, dim=0).detach()
    logits = ev.logits(mixed(files, ev.targets, keys, alphas), soup=True)
    members = [s.trial_id for s in pool]
    layers = keys if per_layer else ["all"]
    table = [{"trial_id": s.trial_id, "layer": layer, "weight": alphas[i, j].item()}
             for j, layer in enumerate(layers) for i, s in enumerate(pool)]
    weights = ctx.save(name, members, lineage(pool, members))
    return MethodResult(name, logits, 1, members, weights, trace, {"weights": table},
                        {"temperature": math.exp(log_temperature.item())})


def mixed(files: list[TensorFile], targets: dict, keys: list[str], alphas: torch.Tensor) -> LazyState:
    """Σ_i α_i θ_i, tensor by tensor; integer buffers (equal in every ingredient) from the first."""
    column = {key: (i if alphas.shape[1] > 1 else 0) for i, key in enumerate(keys)}

    def value(key: str) -> torch.Tensor:
        if key not in column:
            return files[0].get(key)
        weights = alphas[:, column[key]]
        total = sum(w * f.get(key).to(torch.float32) for w, f in zip(weights.tolist(), files))
        return total.to(targets[key].dtype)

    return LazyState(targets.keys(), value)


def heldout_gradient(ev, log_temperature: torch.Tensor) -> tuple[float, float]:
    """Mean held-out cross-entropy of the loaded weights (logits times the temperature), with its
    gradient left in the parameters' .grad and in log_temperature.grad; returns (loss, top-1)."""
    model, images, labels = ev.model, ev.heldout.images, ev.heldout.labels
    for p in model.parameters():
        p.grad = None
    total, correct, step = 0.0, 0, ev.batch_size
    with torch.enable_grad():
        for start in range(0, len(images), step):
            batch = images[start:start + step].to(ev.device).float().div_(255)
            target = labels[start:start + step].to(ev.device)
            with autocast_for(ev.device, ev.precision):
                logits = model(batch).float()
            loss = F.cross_entropy(logits * log_temperature.exp().to(ev.device), target,
                                   reduction="sum") / len(images)
            loss.backward()
            total += loss.item()
            correct += (logits.argmax(-1) == target).sum().item()
    return total, correct / len(images)


def inner_products(ev, files: list[TensorFile], keys: list[str]) -> torch.Tensor:
    """(ingredients, tensors): <dL/dθ, θ_i> per tensor; 0 for tensors without a gradient (buffers)."""
    grads = {name: p.grad for name, p in ev.model.named_parameters() if p.grad is not None}
    out = torch.zeros(len(files), len(keys))
    for j, key in enumerate(keys):
        if key in grads:
            grad = grads[key].double()
            for i, f in enumerate(files):
                out[i, j] = (grad * f.get(key).to(grad.device, torch.float64)).sum().item()
    for p in ev.model.parameters():
        p.grad = None  # the gradient is one checkpoint: free it before the next step loads a soup
    return out
