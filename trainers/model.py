"""Building models: open_clip towers, the zero-shot head, and the classifier we train and soup.

The classifier (image tower + linear head) is what every checkpoint holds. The sweep builds it once
with its zero-shot head (the "base"); every trial starts from those exact weights.
"""
from __future__ import annotations

import hashlib
import logging

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from trainers.architectures import build_clip, check_pretrained, model_config, tokenizer_for
from trainers.config import ModelConfig
from trainers.prompts import class_prompts

log = logging.getLogger(__name__)


class ImageClassifier(nn.Module):
    """CLIP image tower, L2-normalised features, linear head. Takes float images in [0, 1]."""

    def __init__(self, visual: nn.Module, head: nn.Linear, mean, std):
        super().__init__()
        self.visual = visual
        self.head = head
        # Not persistent: checkpoints (and soups) hold learned weights only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return input_size(self.visual)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features (what the head and the text losses compare)."""
        return F.normalize(embedding(self.visual, self.normalise(images)), dim=-1)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def embedding(visual: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The image tower's contrastive embedding: CoCa's tower also returns its tokens (for the captioner)."""
    out = visual(inputs)
    return out[0] if isinstance(out, tuple) else out


def input_size(visual: nn.Module) -> int:
    """Side length of the square images an open_clip image tower takes."""
    size = visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def zeroshot_head(clip: nn.Module, cfg: ModelConfig, classes: list[str]) -> torch.Tensor:
    """(classes, dim) head weights from the prompts `cfg` gives each class (templates, class names,
    descriptions): head(normalised image features) then equals CLIP's logits."""
    return head_from_prompts(clip, tokenizer_for(cfg), class_prompts(cfg, classes))


@torch.no_grad()
def head_from_prompts(clip: nn.Module, tokenizer, prompts: list[list[str]], batch_size: int = 256) -> torch.Tensor:
    """Zero-shot head weights from each class's prompts (any number per class), on the text tower's device."""
    was_training = clip.training
    clip.eval()
    device = clip.logit_scale.device
    rows = []
    for one_class in prompts:
        text = torch.cat([clip.encode_text(tokenizer(one_class[i:i + batch_size]).to(device)).float()
                          for i in range(0, len(one_class), batch_size)])
        rows.append(F.normalize(F.normalize(text, dim=-1).mean(0), dim=0))
    clip.train(was_training)
    return clip.logit_scale.exp().float() * torch.stack(rows)


def logit_bias(clip: nn.Module) -> float:
    """The learned bias SigLIP models add to every logit (0 for models without one)."""
    bias = getattr(clip, "logit_bias", None)
    return 0.0 if bias is None else float(bias.detach().float().reshape(-1)[0])


def text_tower_state(clip: nn.Module) -> dict[str, torch.Tensor]:
    """Every CLIP weight outside the image tower: what the text losses (FLYP, CaRFT) need besides it."""
    return {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}


def clip_with_tower(cfg: ModelConfig, classifier: "ImageClassifier", text_state: dict[str, torch.Tensor]) -> nn.Module:
    """A CLIP whose image tower *is* `classifier.visual` (shared, not copied) and whose text tower is `text_state`."""
    clip = build_clip(cfg)
    clip.visual = classifier.visual
    missing, unexpected = clip.load_state_dict(text_state, strict=False)
    missing = [k for k in missing if not k.startswith("visual.")]
    if missing or unexpected:
        raise ValueError(f"text tower does not fit {cfg.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return clip


def preprocess_stats(clip: nn.Module) -> tuple[tuple, tuple]:
    """The (mean, std) open_clip set on the model: the pretrained tag's or local-dir's, else OpenAI's."""
    stats = getattr(clip.visual, "preprocess_cfg", {}) or {}
    return (tuple(stats.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            tuple(stats.get("std", open_clip.OPENAI_DATASET_STD)))


def _classifier(cfg: ModelConfig, clip: nn.Module, num_classes: int) -> ImageClassifier:
    """The classifier on `clip`'s image tower; every open_clip tower projects to the config's embed_dim."""
    head = nn.Linear(model_config(cfg.name)["embed_dim"], num_classes)
    return ImageClassifier(clip.visual, head, *preprocess_stats(clip))


def build_classifier(cfg: ModelConfig, num_classes: int) -> ImageClassifier:
    """The classifier's architecture with untrained weights: load a checkpoint into it."""
    return _classifier(cfg, build_clip(cfg), num_classes)


def build_zeroshot_classifier(cfg: ModelConfig, classes: list[str]) -> ImageClassifier:
    """The base model of a sweep: pretrained image tower plus the zero-shot head of `classes`."""
    return zeroshot_classifier_and_clip(cfg, classes)[0]


def zeroshot_classifier_and_clip(cfg: ModelConfig, classes: list[str]) -> tuple[ImageClassifier, nn.Module]:
    """The zero-shot classifier and the pretrained CLIP it came from (sharing its image tower)."""
    clip = build_clip(cfg, check_pretrained(cfg))
    model = _classifier(cfg, clip, len(classes))
    with torch.no_grad():
        model.head.weight.copy_(zeroshot_head(clip, cfg, classes))
        model.head.bias.fill_(logit_bias(clip))  # CLIP's logits exactly, SigLIP's bias included
    return model, clip


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: identifies a shared initialisation."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
