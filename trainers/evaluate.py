"""Evaluation: logits of a model on an image set, in batches, on any device."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


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


def loss_and_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[summed cross-entropy, number correct, count] as one tensor, ready for an all-reduce."""
    labels = labels.to(logits.device)
    return torch.stack([
        F.cross_entropy(logits, labels, reduction="sum"),
        (logits.argmax(-1) == labels).sum().float(),
        torch.tensor(float(len(labels)), device=logits.device),
    ])


def image_features(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str = "auto",
                   batch_size: int = 256) -> torch.Tensor:
    """float32 L2-normalised features (N, dim) of an ImageClassifier's image tower for uint8 images."""
    return F.normalize(_batched(model, model.features, images, device, precision, batch_size), dim=-1)
