"""What every task shares: where it starts from, the soft-target loss, and train mode with frozen parts.

A task is one fine-tuning method on the one training loop. It builds the module the loop trains
(`forward(images, targets) -> scalar loss`; only its parameters that require grad are optimised) and
says which `ImageClassifier` is evaluated and saved, so every checkpoint has one format and soups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import TrainConfig
from trainers.model import ImageClassifier, clip_with_tower


@dataclass
class Start:
    """The shared initialisation a trial starts from: the base classifier (weights loaded) and its
    classes; `text_state` loads the pretrained text tower for the tasks that use text."""

    cfg: TrainConfig
    classifier: ImageClassifier
    classes: list[str]
    text_state: Callable[[], dict[str, torch.Tensor]]

    def clip(self) -> nn.Module:
        """A CLIP sharing the classifier's image tower, with the pretrained text tower."""
        return clip_with_tower(self.cfg.model, self.classifier, self.text_state())


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against probability targets (label smoothing, mixup), computed in float32."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class Task:
    """Base of the tasks: subclasses set `module` in `__init__` and may override the rest."""

    needs_text = False  # needs the pretrained text tower from the base checkpoint
    trains_more_than_classifier = False  # resuming needs the whole module, not only the saved classifier

    def __init__(self, start: Start):
        self.cfg = start.cfg
        self.module: nn.Module = ClassifierLoss(start.classifier)
        if self.cfg.model.freeze_batchnorm:
            for layer in batchnorm_layers(start.classifier.visual):
                layer.requires_grad_(False)

    def classifier(self, module: nn.Module) -> ImageClassifier:
        """The classifier to evaluate and save, from `module` (the live module or its weight average)."""
        return module.classifier

    def frozen(self, module: nn.Module) -> list[nn.Module]:
        """Submodules that stay in eval mode while training."""
        return batchnorm_layers(module.classifier.visual) if self.cfg.model.freeze_batchnorm else []

    def train_mode(self, module: nn.Module) -> None:
        module.train()
        for part in self.frozen(module):
            part.eval()


class ClassifierLoss(nn.Module):
    """Cross-entropy of the classifier's logits against the targets."""

    def __init__(self, classifier: ImageClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(self.classifier(images), targets)
