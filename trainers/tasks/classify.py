"""Cross-entropy tasks: end-to-end fine-tuning (`ft`) and the linear probe (`lp`, the head only).

The linear-probe *init* (a head fitted once per sweep on cached frozen features, shared by every
trial) is `fit_linear_probe`, called when the base checkpoint is written.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.tasks.base import ClassifierLoss, Start, Task, soft_cross_entropy


class FineTune(Task):
    """Cross-entropy with the classifier head, training the image tower and the head."""


class LinearProbe(Task):
    """Only the head trains; the image tower is frozen (and runs without building a graph)."""

    def __init__(self, start: Start):
        super().__init__(start)
        start.classifier.visual.requires_grad_(False)
        self.module = HeadOnlyLoss(start.classifier)

    def frozen(self, module: nn.Module) -> list[nn.Module]:
        return [module.classifier.visual]


class HeadOnlyLoss(ClassifierLoss):
    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.classifier.features(images)
        return soft_cross_entropy(self.classifier.head(features), targets)


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, head: nn.Linear, l2: float,
                     steps: int) -> None:
    """Multinomial logistic regression on normalised features, written into `head` (in place).

    Starts from the head it is given (the zero-shot head) and keeps its logit scale s as a constant:
    logits = s * (features @ V.T) + b with L2 penalty l2 * |V|^2, fitted by L-BFGS. Deterministic, so
    the sweep's one shared LP init is the same wherever it is computed."""
    features, labels = features.float(), labels.to(features.device)
    with torch.no_grad():
        scale = head.weight.norm(dim=1).mean().clamp(min=1e-6)
    direction = (head.weight.detach().float() / scale).clone().requires_grad_(True)
    bias = head.bias.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([direction, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(scale * features @ direction.T + bias, labels) + l2 * direction.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        head.weight.copy_(scale * direction)
        head.bias.copy_(bias)
