"""CaRFT, context-aware robust fine-tuning (after Mao et al. 2023, "CAR-FT"): cross-entropy plus a KL
term that keeps the fine-tuned image features' distribution over contexts ("a sketch of a ...",
"a photo of a ...") close to the zero-shot model's, so fine-tuning keeps what CLIP knows about
context, which is what distribution shifts change.

Each context's text embedding is the normalised mean over classes of "a {context} of a {class}."
(computed once from the pretrained text tower); the zero-shot image tower is a frozen copy of the base.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from trainers.model import ImageClassifier, embedding, head_from_prompts, tokenizer_for
from trainers.prompts import context_prompts
from trainers.tasks.base import Start, Task, soft_cross_entropy


class Carft(Task):
    needs_text = True

    def __init__(self, start: Start):
        super().__init__(start)
        method = self.cfg.method
        clip = start.clip()
        contexts = head_from_prompts(clip, tokenizer_for(self.cfg.model),
                                     context_prompts(method.contexts, self.cfg.model, start.classes))
        scale = float(clip.logit_scale.detach().exp())
        del clip  # the text tower is no longer needed
        zeroshot_visual = copy.deepcopy(start.classifier.visual).eval().requires_grad_(False)
        self.module = CarftLoss(start.classifier, zeroshot_visual, F.normalize(contexts, dim=-1), scale,
                                method.kl_weight)

    def frozen(self, module: nn.Module) -> list[nn.Module]:
        return super().frozen(module) + [module.zeroshot_visual]


class CarftLoss(nn.Module):
    def __init__(self, classifier: ImageClassifier, zeroshot_visual: nn.Module, contexts: torch.Tensor,
                 scale: float, kl_weight: float):
        super().__init__()
        self.classifier, self.zeroshot_visual = classifier, zeroshot_visual
        self.register_buffer("contexts", contexts, persistent=False)
        self.scale, self.kl_weight = scale, kl_weight

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        inputs = self.classifier.normalise(images)
        features = F.normalize(embedding(self.classifier.visual, inputs), dim=-1)
        ce = soft_cross_entropy(self.classifier.head(features), targets)
        with torch.no_grad():
            reference = F.normalize(embedding(self.zeroshot_visual, inputs).float(), dim=-1)
            log_q = F.log_softmax(self.scale * reference @ self.contexts.T, dim=-1)
        log_p = F.log_softmax(self.scale * features.float() @ self.contexts.T, dim=-1)
        kl = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")  # KL(zero-shot || fine-tuned)
        return ce + self.kl_weight * kl
