"""`model.compile` on the one training loop: the compiled step learns, dynamo compiles it once (no graph
breaks, no recompiles from step to step) and the checkpoint is the plain classifier eager training saves.

`aot_eager` runs dynamo and AOTAutograd (the graphs inductor would be given) with PyTorch's own kernels: a
few seconds here. `true` means inductor, which writes and compiles C++ on a CPU: ~25-30 s for the tiny
model on a 2-core machine with a cold cache, so that test is marked slow.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch._dynamo.utils import counters

from tests.trainers.test_tasks import heldout_top1, train, tree
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_checkpoint
from trainers.config import TrainConfig, validate
from trainers.errors import UserError


@pytest.fixture(scope="module")
def base(demo_data, pretrained_file, tmp_path_factory):
    """A pretrained base whose zero-shot head is poor on purpose (test_tasks' recipe): learning shows."""
    cfg = TrainConfig.model_validate(tree(demo_data, pretrained_file, name="ft"))
    directory = tmp_path_factory.mktemp("base") / "base"
    write_base_checkpoint(cfg, directory)
    return cfg, str(directory), heldout_top1(load_checkpoint(directory).state_dict, cfg, demo_data["heldout"])


def compiled_train(cfg: TrainConfig, base_dir: str, out) -> dict[str, dict]:
    """Train with a recompilation as an error; returns dynamo's counters for this run alone."""
    torch._dynamo.reset()  # as in a fresh process: what earlier tests compiled does not count
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        train(cfg, base_dir, out)
    return {name: dict(values) for name, values in counters.items()}


def test_aot_eager_learns_compiles_once_and_saves_what_eager_training_saves(base, demo_data, tmp_path):
    cfg, base_dir, before = base
    compiled = compiled_train(cfg.with_overrides({"model.compile": "aot_eager"}), base_dir, tmp_path / "compiled")
    assert compiled.get("frames", {}).get("ok") == 1, compiled  # compiled: one frame, no graph break splitting it
    assert compiled["stats"]["unique_graphs"] == 1 and compiled.get("aot_autograd", {}).get("ok") == 1, compiled
    assert not compiled.get("graph_break"), compiled["graph_break"]

    state = load_checkpoint(tmp_path / "compiled").state_dict
    assert not [k for k in state if "_orig_mod." in k or k.startswith("module.")]
    after = heldout_top1(state, cfg, demo_data["heldout"])  # loads strictly into trainers.model.build_classifier
    assert after > max(0.4, before + 0.1), (before, after)  # 4 classes: chance is 0.25

    train(cfg, base_dir, tmp_path / "eager")  # the same run uncompiled: the same weights, up to rounding
    eager = load_checkpoint(tmp_path / "eager").state_dict
    assert state.keys() == eager.keys()
    assert all(torch.allclose(state[k], eager[k], atol=1e-5, rtol=1e-4) for k in state)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")), reason="inductor on a CPU needs a C++ compiler")
def test_true_compiles_with_inductor_and_learns(base, demo_data, tmp_path):
    cfg, base_dir, before = base
    compiled = compiled_train(cfg.with_overrides({"model.compile": True}), base_dir, tmp_path / "ckpt")
    assert compiled.get("frames", {}).get("ok") == 1 and not compiled.get("graph_break"), compiled
    assert compiled.get("inductor"), "inductor did not run"  # what distinguishes it from aot_eager
    after = heldout_top1(load_checkpoint(tmp_path / "ckpt").state_dict, cfg, demo_data["heldout"])
    assert after > max(0.4, before + 0.1), (before, after)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("aot_eager", "aot_eager"),
                                             ("inductor", "inductor"), ("false", False)])
def test_compile_takes_a_bool_or_a_backend_and_round_trips(value, expected):
    cfg = validate(TrainConfig, {"model": {"compile": value}})
    assert cfg.model.compile == expected
    assert TrainConfig.from_params(cfg.to_params()) == cfg  # the MLflow params view


def test_an_unknown_backend_is_one_line_naming_the_choices():
    with pytest.raises(UserError) as err:
        validate(TrainConfig, {"model": {"compile": "max-autotune"}})
    assert str(err.value) == ("config: model.compile: use true (inductor), false or a torch.compile backend: "
                              "inductor, aot_eager, eager (got 'max-autotune')")
