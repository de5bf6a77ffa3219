"""Evaluation: logits of a model on an image set, in batches, on any device."""
from __future__ import annotations

import contextlib
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from trainers.data.cache import decoded_batches


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked for, or where 'auto' and the GPU supports it; else nothing."""
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def predict(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str = "auto",
            batch_size: int = 256) -> torch.Tensor:
    """float32 logits (N, classes) on `device` for uint8 images (N, 3, S, S)."""
    return _batched(model, model, images, device, precision, batch_size)


@torch.no_grad()
def _batched(model: nn.Module, forward, images: torch.Tensor, device: torch.device, precision: str,
             batch_size: int) -> torch.Tensor:
    """`forward` (the model or one of its methods) over uint8 images in batches, in eval mode, float32."""
    was_training = model.training
    model.eval()
    chunks = []
    with autocast_for(device, precision):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device, non_blocking=True).float().div_(255)
            chunks.append(forward(batch).float())
    model.train(was_training)
    return torch.cat(chunks)


def image_features(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str = "auto",
                   batch_size: int = 256) -> torch.Tensor:
    """float32 L2-normalised features (N, dim) of an ImageClassifier's image tower for uint8 images."""
    return F.normalize(_batched(model, model.features, images, device, precision, batch_size), dim=-1)


def split_features(model: nn.Module, path: str, device: torch.device, precision: str = "auto",
                   rows: Collection[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image features (N, dim) and labels (N,) of a whole split (only `rows`, when given), on
    `device`. Images are decoded and encoded a batch at a time, so a training set of any size fits: only
    its features are kept."""
    features, labels = [], []
    for images, batch_labels in decoded_batches(path, model.image_size, device, rows=rows):
        features.append(image_features(model, images, device, precision))
        labels += batch_labels
    dim = model.head.in_features
    return (torch.cat(features) if features else torch.empty(0, dim, device=device),
            torch.tensor(labels, dtype=torch.int64, device=device))
