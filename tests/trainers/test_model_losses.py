"""FLYP and the zero-shot head follow the model: CLIP's softmax loss, SigLIP's sigmoid loss with its
learned logit bias (checked against open_clip's own ClipLoss and SigLipLoss), the head's bias."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from tests.families import write_tiny_config
from trainers.config import ModelConfig
from trainers.model import build_clip, tokenizer_for, zeroshot_classifier_and_clip
from trainers.tasks.flyp import FlypLoss, prompt_tokens, sigmoid_loss, softmax_loss

CLASSES = ["circle", "square", "triangle"]


def features(n: int = 6, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (F.normalize(torch.randn(n, dim, generator=gen), dim=-1),
            F.normalize(torch.randn(n, dim, generator=gen), dim=-1))


def test_on_distinct_classes_the_losses_are_open_clips():
    image, text = features()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    distinct = torch.eye(6)
    assert torch.allclose(softmax_loss(scale * image @ text.T, distinct), ClipLoss()(image, text, scale))
    assert torch.allclose(sigmoid_loss(scale * image @ text.T + bias, distinct),
                          SigLipLoss()(image, text, scale, bias))


def test_same_class_pairs_are_positives_of_the_sigmoid_loss():
    image, text = features(2)
    logits = 5 * image @ text.T
    assert sigmoid_loss(logits, torch.ones(2, 2)) == -F.logsigmoid(logits).sum() / 2


@pytest.fixture(scope="module")
def sigmoid_model(tmp_path_factory) -> ModelConfig:
    return ModelConfig(name=write_tiny_config("sigmoid", tmp_path_factory.mktemp("cfg")), templates="simple")


def test_zeroshot_head_gives_siglips_logits_bias_included(sigmoid_model):
    torch.manual_seed(0)
    model, clip = zeroshot_classifier_and_clip(sigmoid_model, CLASSES)
    assert clip.logit_bias is not None and model.head.bias[0].item() == clip.logit_bias.item()
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        image, text, scale, bias = clip(model.normalise(images), tokenizer_for(sigmoid_model)(
            [f"a photo of a {c}." for c in CLASSES]))
        assert torch.allclose(model.eval()(images), scale * image @ text.T + bias, atol=1e-4)


def test_flyp_trains_the_logit_bias_of_sigmoid_models(sigmoid_model):
    torch.manual_seed(0)
    model, clip = zeroshot_classifier_and_clip(sigmoid_model, CLASSES)
    loss = FlypLoss(clip, model, prompt_tokens(tokenizer_for(sigmoid_model), [[f"a {c}."] for c in CLASSES]))
    images = torch.rand(3, 3, model.image_size, model.image_size)
    loss(images, torch.eye(3)).backward()
    assert clip.logit_bias.grad is not None and clip.logit_bias.grad.abs().sum() > 0
    clip_model = build_clip(ModelConfig())  # a CLIP model has no bias: the softmax loss
    assert clip_model.logit_bias is None
