"""Training-free baselines: the zero-shot prompt ensemble and Tip-Adapter, once per sweep."""
from __future__ import annotations

import torch

from tests.conftest import data_section
from tests.trainers.test_tasks import WRONG_NAMES
from trainers.baselines import ALPHAS, BETAS, Baselines, cache_logits, cache_rows, training_free_baselines
from trainers.data.cache import load_eval_set
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_weights
from trainers.config import TrainConfig
from trainers.data.store import read_split
from trainers.evaluate import predict
from trainers.model import build_classifier, build_zeroshot_classifier


def test_zeroshot_and_tip_adapter_on_every_set(demo_data, pretrained_file, tmp_path):
    cfg = TrainConfig.model_validate({"data": data_section(demo_data), "model": {
        "pretrained": pretrained_file, "templates": "simple", "class_names": WRONG_NAMES}})
    found = training_free_baselines(cfg, torch.device("cpu"))
    assert set(found.logits) == {"zeroshot", "tip_adapter"}
    assert set(found.logits["zeroshot"]) == {"heldout", "test", "shift/sketch"}

    # zero-shot is the prompt-ensemble classifier, evaluated as the soup stage evaluates models
    classifier = build_zeroshot_classifier(cfg.model, ["circle", "square", "triangle", "cross"])
    test = read_split(demo_data["test"], 32)
    assert torch.allclose(found.logits["zeroshot"]["test"], predict(classifier, test.images, torch.device("cpu")),
                          atol=1e-4)
    assert torch.equal(found.labels["test"], test.labels)

    # the prompts name the wrong shapes: the cache of labelled training images fixes much of it
    assert found.tip_alpha in ALPHAS and found.tip_beta in BETAS and found.tip_alpha > 0
    for name in ("heldout", "test"):
        assert found.metrics["tip_adapter"][name]["top1"] > found.metrics["zeroshot"][name]["top1"] + 0.2
    found.save(tmp_path)
    again = Baselines.load(tmp_path)
    assert again.metrics == found.metrics and again.tip_beta == found.tip_beta
    assert torch.equal(again.logits["tip_adapter"]["shift/sketch"], found.logits["tip_adapter"]["shift/sketch"])


def test_cache_logits_sum_label_votes_weighted_by_similarity():
    keys = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    got = cache_logits(query, keys, values, beta=2.0, chunk=1)
    similarity = torch.tensor([1.0, 0.0, 2 ** -0.5])
    weights = torch.exp(-2.0 * (1 - similarity))
    assert torch.allclose(got, torch.tensor([[weights[0], weights[1] + weights[2]]]))


def test_the_tip_adapter_cache_takes_at_most_shots_images_per_class(demo_data):
    labels = read_split(demo_data["train"], 32).labels
    rows = cache_rows(demo_data["train"], shots=3)
    taken = torch.bincount(labels[rows], minlength=4)
    assert taken.tolist() == [3, 3, 3, 3] and len(set(rows)) == 12
    assert cache_rows(demo_data["train"], shots=3) == rows  # seeded: the same cache every time
    assert cache_rows(demo_data["train"], shots=None) is None
    cached = load_eval_set(demo_data["train"], 32, torch.device("cpu"), rows=rows)
    assert torch.equal(cached.labels, labels[rows]) and len(cached) == 12


def test_without_pretrained_weights_the_zero_shot_baseline_is_the_sweeps_base(demo_data, tmp_path):
    cfg = TrainConfig.model_validate({"data": data_section(demo_data)})  # random towers, built from cfg.seed
    write_base_checkpoint(cfg, tmp_path / "base")
    base = build_classifier(cfg.model, 4)
    base.load_state_dict(load_weights(tmp_path / "base"))
    found = training_free_baselines(cfg, torch.device("cpu"), shots=2)
    test = read_split(demo_data["test"], 32)
    assert torch.allclose(found.logits["zeroshot"]["test"], predict(base, test.images, torch.device("cpu")),
                          atol=1e-4)
