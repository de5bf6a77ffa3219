"""FLYP (Goyal et al. 2023, "Finetune like you pretrain"): the loss the model was pre-trained with,
between each image and a prompt of its class, training both towers and the logit scale: CLIP's
softmax contrastive loss, or for models with a learned logit bias (SigLIP) the sigmoid loss with it.

Each image gets one of its class's prompts (templates and descriptions), drawn on the device at
every step. Images of the same class in a batch are all positives for each other's prompts (the
targets are spread over them; the sigmoid loss labels them positive), so small class counts do not
push same-class pairs apart: on a batch of distinct classes both are exactly open_clip's ClipLoss and
SigLipLoss. The model
that is evaluated and saved is the image tower with the zero-shot head rebuilt from the fine-tuned
text tower: a plain ImageClassifier, like every other task's checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.model import ImageClassifier, logit_bias, tokenizer_for
from trainers.prompts import class_prompts
from trainers.tasks.base import Start, Task, soft_cross_entropy

MAX_LOGIT_SCALE = 100.0  # CLIP clamps its temperature there during training


class Flyp(Task):
    needs_text = True
    trains_more_than_classifier = True  # the text tower trains but is not in the saved classifier

    def __init__(self, start: Start):
        super().__init__(start)
        start.classifier.head.requires_grad_(False)  # rebuilt from the text tower, not trained
        prompts = class_prompts(self.cfg.model, start.classes)
        clip = start.clip()
        if hasattr(clip, "text_decoder"):  # CoCa's captioner: not part of the contrastive loss
            clip.text_decoder.requires_grad_(False)
        self.module = FlypLoss(clip, start.classifier, prompt_tokens(tokenizer_for(self.cfg.model), prompts))

    def classifier(self, module: nn.Module) -> ImageClassifier:
        module.rebuild_head()
        return module.classifier


def prompt_tokens(tokenizer, prompts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (classes, most prompts, context) padded by repeating a class's first prompt, and counts."""
    most = max(len(p) for p in prompts)
    padded = [p + [p[0]] * (most - len(p)) for p in prompts]
    tokens = tokenizer([text for class_prompts in padded for text in class_prompts])
    return tokens.view(len(prompts), most, -1), torch.tensor([len(p) for p in prompts])


class FlypLoss(nn.Module):
    def __init__(self, clip: nn.Module, classifier: ImageClassifier, tokens: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.clip, self.classifier = clip, classifier  # clip.visual is classifier.visual
        self.register_buffer("tokens", tokens[0], persistent=False)
        self.register_buffer("counts", tokens[1], persistent=False)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = targets.argmax(-1)  # the dominant class of a mixed image
        pick = (torch.rand(len(labels), device=labels.device) * self.counts[labels]).long()
        text = F.normalize(self.clip.encode_text(self.tokens[labels, pick]).float(), dim=-1)
        image = self.classifier.features(images).float()
        logits = self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * image @ text.T
        same = (labels[:, None] == labels[None, :]).float()
        if self.clip.logit_bias is not None:
            return sigmoid_loss(logits + self.clip.logit_bias, same)
        return softmax_loss(logits, same)

    @torch.no_grad()
    def rebuild_head(self) -> None:
        """The zero-shot head of the current text tower: per class, the normalised mean of its prompts'
        normalised embeddings, times the logit scale (as trainers.model.head_from_prompts)."""
        was_training = self.clip.training
        self.clip.eval()
        rows = []
        for tokens, count in zip(self.tokens, self.counts.tolist()):
            text = F.normalize(self.clip.encode_text(tokens[:count]).float(), dim=-1)
            rows.append(F.normalize(text.mean(0), dim=0))
        self.clip.train(was_training)
        scale = self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE).float()
        self.classifier.head.weight.copy_(scale * torch.stack(rows))
        self.classifier.head.bias.fill_(logit_bias(self.clip))


def softmax_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, the targets spread over each row's same-class pairs."""
    positives = same / same.sum(1, keepdim=True)  # symmetric rows: the same targets both ways
    return (soft_cross_entropy(logits, positives) + soft_cross_entropy(logits.T, positives)) / 2


def sigmoid_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss (open_clip's SigLipLoss): every pair a binary decision, same-class pairs positive."""
    return -F.logsigmoid((2 * same - 1) * logits.float()).sum() / len(logits)
