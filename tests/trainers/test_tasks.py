"""Every method and init on the tiny model: it learns, and the soup stage loads what it saves.

The zero-shot head is made poor on purpose (the prompts name the wrong shapes), so a method that
learns shows it on held-out images; each trained checkpoint then goes through the soup stage's own
reading and screening against the base, and is evaluated from what the soup loaded.
"""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from soup.scoring.score import base_reference, check
from soup.inputs.weights import Converter, read_weights
from soup.inputs.base import base_from_checkpoint
from tests.conftest import data_section
from trainers import metrics as M
from trainers.base import TEXT_TOWER, write_base_checkpoint
from trainers.checkpoint import DIGESTS, WEIGHTS, ChangedCheckpoint, load_checkpoint, load_train_state, read_meta
from trainers.config import TrainConfig
from trainers.data.store import read_split
from trainers.errors import UserError
from trainers.evaluate import predict
from trainers.loop import RunContext, fit
from trainers.model import build_classifier

WRONG_NAMES = {"circle": "square", "square": "triangle", "triangle": "cross", "cross": "circle"}


def tree(demo_data, pretrained_file, **method) -> dict:
    return {"data": data_section(demo_data),
            "model": {"pretrained": pretrained_file, "templates": "simple", "class_names": WRONG_NAMES},
            "optim": {"epochs": 2, "lr": 2e-3, "batch_size": 32, "warmup_steps": 2}, "method": method}


@pytest.fixture(scope="module")
def bases(demo_data, pretrained_file, tmp_path_factory):
    """Base checkpoints for both inits: init name -> directory."""
    root = tmp_path_factory.mktemp("bases")
    made = {}
    for init in ("zeroshot", "lp"):
        cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, init=init))
        write_base_checkpoint(cfg, root / init)
        made[init] = str(root / init)
    return made


def heldout_top1(state: dict, cfg: TrainConfig, path: str) -> float:
    model = build_classifier(cfg.model, 4)
    model.load_state_dict(state)
    split = read_split(path, model.image_size)
    return (predict(model, split.images, torch.device("cpu")).argmax(-1) == split.labels).float().mean().item()


def train(cfg: TrainConfig, base_dir: str, out):
    """Fit, keeping the last checkpoint in `out`; returns the metrics."""
    def report(metrics, checkpoint_dir):
        if checkpoint_dir:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(checkpoint_dir, out)

    return fit(cfg, RunContext(base_dir=base_dir, report=report, trial_id="t")).metrics


def soup_loaded_state(checkpoint, base_dir: str, workdir) -> dict:
    """The weights as the soup stage reads them, after its screening against the base accepted them."""
    base = base_from_checkpoint(base_dir, workdir)
    weights = read_weights(str(checkpoint), workdir, Converter(base.config.model, base.classes))
    assert check(weights, base_reference(base), tolerance=0.5) is None
    return weights.state


@pytest.mark.parametrize("method, lr", [("ft", 2e-3), ("lp", 5e-2), ("flyp", 2e-3), ("carft", 4e-3)])
def test_method_learns_and_the_soup_loads_it(method, lr, bases, demo_data, pretrained_file, tmp_path):
    # the head's rows have the logit scale's norm: training the head alone takes a larger step
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name=method)).with_overrides({"optim.lr": lr})
    before = heldout_top1(load_checkpoint(bases["zeroshot"]).state_dict, cfg, demo_data["heldout"])
    metrics = train(cfg, bases["zeroshot"], tmp_path / "ckpt")
    state = soup_loaded_state(tmp_path / "ckpt", bases["zeroshot"], tmp_path)
    after = heldout_top1(state, cfg, demo_data["heldout"])
    assert after > max(0.4, before + 0.1), (before, after)  # 4 classes: chance is 0.25
    assert {M.VAL_TOP1, M.VAL_MACRO_F1, M.VAL_ECE, M.VAL_LOSS} <= set(metrics)
    per_class = load_checkpoint(tmp_path / "ckpt").meta["per_class"]["val"]
    assert per_class["class"] == ["circle", "square", "triangle", "cross"] and sum(per_class["support"]) == 64

    base = load_checkpoint(bases["zeroshot"]).state_dict
    moved = {k for k in base if not torch.equal(base[k], state[k])}
    if method == "lp":  # the head only
        assert moved == {"head.weight", "head.bias"}
    else:
        assert any(k.startswith("visual.") for k in moved) and "head.weight" in moved


def test_flyp_trains_both_towers_and_saves_the_head_of_its_text_tower(bases, demo_data, pretrained_file,
                                                                      tmp_path):
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="flyp")).with_overrides(
        {"optim.epochs": 1})
    train(cfg, bases["zeroshot"], tmp_path / "ckpt")
    module = load_train_state(tmp_path / "ckpt")["module"]
    text_before = load_file(f"{bases['zeroshot']}/{TEXT_TOWER}")
    assert any(not torch.equal(module[f"clip.{k}"], v) for k, v in text_before.items() if k != "logit_scale")
    saved = load_checkpoint(tmp_path / "ckpt").state_dict
    assert torch.equal(saved["visual.conv1.weight"], module["classifier.visual.conv1.weight"])
    # the saved head is the zero-shot head of the trained text tower, rebuilt through the generic code path
    from trainers.model import build_clip, head_from_prompts, tokenizer_for
    from trainers.prompts import class_prompts
    clip = build_clip(cfg.model)
    clip.load_state_dict({k.removeprefix("clip."): v for k, v in module.items() if k.startswith("clip.")})
    head = head_from_prompts(clip, tokenizer_for(cfg.model), class_prompts(cfg.model, ["circle", "square", "triangle", "cross"]))
    assert torch.allclose(saved["head.weight"], head, atol=1e-4)


def test_lp_init_is_fitted_once_and_lp_ft_starts_from_it(bases, demo_data, pretrained_file, tmp_path):
    zeroshot, lp = (load_checkpoint(bases[i]) for i in ("zeroshot", "lp"))
    assert lp.meta["head_init"] == "lp" and zeroshot.meta["head_init"] == "zeroshot"
    assert torch.equal(lp.state_dict["visual.conv1.weight"], zeroshot.state_dict["visual.conv1.weight"])
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="ft", init="lp"))
    lp_top1 = heldout_top1(lp.state_dict, cfg, demo_data["heldout"])
    assert lp_top1 > heldout_top1(zeroshot.state_dict, cfg, demo_data["heldout"]) + 0.2

    # phase 2 starts from the LP head: with a vanishing learning rate the saved head is the LP head
    still = cfg.with_overrides({"optim.lr": 1e-12, "optim.epochs": 1})
    train(still, bases["lp"], tmp_path / "still")
    head = load_checkpoint(tmp_path / "still").state_dict["head.weight"]
    assert torch.allclose(head, lp.state_dict["head.weight"], atol=1e-6)
    assert not torch.allclose(head, zeroshot.state_dict["head.weight"], atol=1e-2)

    train(cfg, bases["lp"], tmp_path / "ckpt")  # LP-FT proper: still learns, and soups with the LP base
    state = soup_loaded_state(tmp_path / "ckpt", bases["lp"], tmp_path)
    assert heldout_top1(state, cfg, demo_data["heldout"]) > 0.5


def test_a_trial_with_another_init_than_the_base_is_refused(bases, demo_data, pretrained_file):
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, init="lp"))
    with pytest.raises(UserError, match="method.init is 'lp' but the sweep's base was prepared with 'zeroshot'"):
        fit(cfg, RunContext(base_dir=bases["zeroshot"]))


def test_a_changed_text_tower_is_refused_before_a_text_loss_trains_from_it(bases, demo_data, pretrained_file,
                                                                           tmp_path):
    base = tmp_path / "base"
    shutil.copytree(bases["zeroshot"], base)
    assert set(read_meta(base)[DIGESTS]) >= {WEIGHTS, TEXT_TOWER}
    data = bytearray((base / TEXT_TOWER).read_bytes())
    data[-1] ^= 1  # the last byte of the last tensor: still loads, silently different
    (base / TEXT_TOWER).write_bytes(bytes(data))
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="flyp"))
    with pytest.raises(ChangedCheckpoint, match=f"{TEXT_TOWER} changed after it was written"):
        fit(cfg, RunContext(base_dir=str(base)))


def test_the_method_names_the_config_accepts_are_the_task_registry():
    from typing import get_args

    from trainers.config import MethodConfig
    from trainers.tasks import TASKS
    assert set(get_args(MethodConfig.model_fields["name"].annotation)) == set(TASKS)
