"""The optimisation step: gradient accumulation, EMA, weight-decay groups, frozen BatchNorm."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainers.config import ModelConfig, OptimConfig, TrainConfig
from trainers.model import ImageClassifier, build_clip
from trainers.step import Stepper, make_optimizer
from trainers.tasks import Start, make_task
from trainers.tasks.base import soft_cross_entropy


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(5, 3)

    def forward(self, x, targets):
        return soft_cross_entropy(self.linear(x), targets)


def batch(n: int = 8):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=gen), torch.softmax(torch.randn(n, 3, generator=gen), -1)


def stepper(module, total: int = 100, **optim) -> Stepper:
    cfg = OptimConfig(lr=0.1, warmup_steps=0, grad_clip=None, **optim)
    return Stepper(module, module, cfg, "fp32", torch.device("cpu"), total)


def test_two_accumulated_half_batches_make_the_full_batch_step():
    x, y = batch()
    full, halves = Regression(), Regression()
    stepper(full).step(x, y)
    accumulating = stepper(halves, total=200, accumulation_steps=2)
    accumulating.step(x[:4], y[:4])
    assert torch.equal(halves.linear.weight, Regression().linear.weight)  # no optimizer step yet
    accumulating.step(x[4:], y[4:])
    assert torch.allclose(full.linear.weight, halves.linear.weight, atol=1e-6)
    assert accumulating.scheduler.last_epoch == 1  # the schedule counts optimizer steps


def test_ema_follows_the_weights_and_is_what_is_evaluated():
    x, y = batch()
    module = Regression()
    run = stepper(module, ema_decay=0.75)
    expected = module.linear.weight.detach().clone()
    for _ in range(3):
        run.step(x, y)
        expected = 0.75 * expected + 0.25 * module.linear.weight.detach()
    averaged = run.evaluated_module()
    assert averaged is not module
    assert torch.allclose(averaged.linear.weight, expected, atol=1e-6)
    assert not torch.allclose(averaged.linear.weight, module.linear.weight)
    restored = stepper(Regression(), ema_decay=0.75)
    restored.load_state_dict(copy.deepcopy(run.state_dict()))
    assert torch.equal(restored.evaluated_module().linear.weight, averaged.linear.weight)


def test_no_weight_decay_on_biases_norms_and_the_logit_scale():
    clip = build_clip(ModelConfig())
    optimizer = make_optimizer(clip, OptimConfig(weight_decay=0.1), torch.device("cpu"))
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(clip.named_parameters())
    assert id(named["logit_scale"]) in no_decay
    for name, param in named.items():
        is_norm_or_bias = name.endswith(".bias") or ".ln_" in name or name.startswith("ln_")
        if is_norm_or_bias:
            assert id(param) in no_decay, name
    assert id(named["visual.conv1.weight"]) not in no_decay


def conv_classifier() -> ImageClassifier:
    torch.manual_seed(0)
    visual = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    visual.image_size = 16
    return ImageClassifier(visual, nn.Linear(8, 2), (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_batchnorm_keeps_its_statistics_and_weights(freeze):
    cfg = TrainConfig.model_validate({"model": {"freeze_batchnorm": freeze}})
    classifier = conv_classifier()
    bn = classifier.visual[1]
    before = copy.deepcopy(bn.state_dict())
    task = make_task(Start(cfg, classifier, ["a", "b"], lambda: {}))
    run = stepper(task.module)
    task.train_mode(task.module)
    images, targets = torch.rand(4, 3, 16, 16), torch.tensor([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)
    run.step(images, targets)
    unchanged = all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    assert unchanged == freeze
    assert not torch.equal(classifier.visual[0].weight, conv_classifier().visual[0].weight)  # the conv trains
