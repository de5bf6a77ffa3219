"""BatchNorm statistics of soups are recomputed on training images; frozen layers keep theirs."""
from __future__ import annotations

import json

import torch
from torch import nn

from soup.scoring.batchnorm import Recalibrator, moved_layers
from soup.methods.options import SoupOptions
from soup.scoring.batchnorm import training_images
from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from tests.conftest import data_section
from tests.soup.conftest import run_stage, train_ingredients
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_weights
from trainers.config import TrainConfig
from trainers.model import build_classifier

TINY_RESNET = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
               "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_recalibration_is_the_exact_average_and_leaves_frozen_layers_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    frozen = model[1]
    frozen.running_mean.fill_(0.3)
    frozen.running_var.fill_(2.0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    Recalibrator({"4"}, images, torch.device("cpu"), "fp32", batch_size=8)(model)
    assert torch.equal(frozen.running_mean, torch.full((4,), 0.3)) and torch.equal(frozen.running_var, torch.full((4,), 2.0))
    with torch.no_grad():
        inputs = model[:4](images.float() / 255)  # what the recomputed layer sees, the frozen one in eval mode
    assert torch.allclose(model[4].running_mean, inputs.mean((0, 2, 3)), atol=1e-6)
    per_batch = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in inputs.split(8)])
    assert torch.allclose(model[4].running_var, per_batch.mean(0), atol=1e-5)
    assert not model.training and model[4].momentum == 0.1  # restored


def test_moved_layers_are_those_whose_statistics_changed():
    reference = {"a.running_mean": torch.zeros(2), "a.running_var": torch.ones(2),
                 "b.running_mean": torch.zeros(2), "b.running_var": torch.ones(2)}
    state = {**reference, "b.running_var": torch.tensor([1.0, 1.5])}
    assert moved_layers(["a", "b"], state, reference) == {"b"}


def test_soups_of_batchnorm_models_get_their_statistics_recomputed(demo_data, tmp_path):
    (tmp_path / "tiny-resnet.json").write_text(json.dumps(TINY_RESNET))
    cfg = TrainConfig.model_validate({"data": data_section(demo_data), "model": {"name": str(tmp_path / "tiny-resnet.json")},
                                      "optim": {"epochs": 1, "warmup_steps": 2}})
    write_base_checkpoint(cfg, tmp_path / "base")
    ingredients = train_ingredients(cfg, str(tmp_path / "base"), tmp_path, [1, 2])
    outcome = run_stage(ingredients, str(tmp_path / "base"), tmp_path / "work", methods=["uniform"], bn_images=64)
    soup = outcome.results[0].load_state()
    a, b = (load_weights(i.checkpoint) for i in ingredients)
    averaged = (a["visual.bn1.running_mean"] + b["visual.bn1.running_mean"]) / 2
    assert not torch.allclose(soup["visual.bn1.running_mean"], averaged, atol=1e-4)
    # the recomputed statistics are those of the soup's own activations on the training images
    model = build_classifier(cfg.model, len(soup["head.bias"]))
    model.load_state_dict(soup)
    model.eval()
    images = training_images(cfg.data.train, model.image_size, 64)
    seen = []
    model.visual.bn1.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(images.float() / 255)
    assert torch.allclose(soup["visual.bn1.running_mean"], seen[0].mean((0, 2, 3)), atol=1e-5)
    assert soup["visual.bn1.num_batches_tracked"].dtype == torch.int64
    # an anytime soup's walk scored soups without recomputed statistics: the greedy soup walks again
    start = {"members": [ingredients[0].trial_id], "trace": [{"step": s, "trial_id": i.trial_id, "stale": True}
                                                             for s, i in enumerate(ingredients)]}
    (tmp_path / "greedy").mkdir()
    made = make_soups(ingredients, base_from_checkpoint(str(tmp_path / "base"), tmp_path / "greedy"),
                      SoupOptions(methods=["greedy"], bn_images=64), tmp_path / "greedy", greedy_start=start)
    assert len(made.results[0].trace) == 2 and not any("stale" in row for row in made.results[0].trace)
