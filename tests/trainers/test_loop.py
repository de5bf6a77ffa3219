"""The one training loop, in one process (no Ray): it learns, checkpoints each epoch, resumes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import data_section
from trainers import metrics as M
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_checkpoint, load_weights, read_meta
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.loop import RunContext, fit


@pytest.fixture(scope="module")
def random_base(demo_data, tmp_path_factory):
    cfg = TrainConfig.model_validate({"data": data_section(demo_data)})
    directory = tmp_path_factory.mktemp("base") / "base"
    return cfg, str(directory), write_base_checkpoint(cfg, directory)


def test_a_random_weights_base_is_the_same_for_the_same_seed(random_base, tmp_path):
    cfg, _, checksum = random_base
    assert write_base_checkpoint(cfg, tmp_path / "again") == checksum  # reproducible runs and tests
    assert write_base_checkpoint(cfg.with_overrides({"seed": 1}), tmp_path / "other") != checksum


def test_learns_from_random_init_and_checkpoints_every_epoch(random_base, tmp_path):
    cfg, base_dir, checksum = random_base
    cfg = cfg.with_overrides({"optim.epochs": 12, "optim.lr": 3e-3, "optim.batch_size": 16, "aug.mixup_alpha": 0.1,
                              "optim.label_smoothing": 0.1})
    kept = []

    def report(metrics, checkpoint_dir):
        kept.append(metrics)
        shutil.copytree(checkpoint_dir, tmp_path / f"epoch{metrics[M.EPOCH]}")

    result = fit(cfg, RunContext(base_dir=base_dir, report=report, trial_id="t1"))
    assert [m[M.EPOCH] for m in kept] == list(range(1, 13))
    assert result.metrics[M.VAL_TOP1] > 0.4  # 4 classes: chance is 0.25 (one CI run reached exactly 0.5)
    assert kept[-1][M.TRAIN_LOSS] < kept[0][M.TRAIN_LOSS]
    last = load_checkpoint(tmp_path / "epoch12")
    assert last.meta["base_checksum"] == checksum and last.meta["trial_id"] == "t1"
    assert TrainConfig.model_validate(last.meta["config"]) == cfg


def test_resume_continues_from_the_checkpoint_epoch(random_base, tmp_path):
    """A run resumed from its epoch-2 checkpoint ends where the uninterrupted run ends: same weights
    bit for bit, which needs the saved weights and the optimizer and scheduler state (Adam's moments)."""
    cfg, base_dir, _ = random_base
    cfg = cfg.with_overrides({"optim.epochs": 3})

    def keep(epoch: int, target: Path):
        return lambda m, d: m[M.EPOCH] == epoch and shutil.copytree(d, target)

    fit(cfg, RunContext(base_dir=base_dir, report=keep(3, tmp_path / "straight")))
    fit(cfg, RunContext(base_dir=base_dir, report=keep(2, tmp_path / "e2")))
    epochs = []
    fit(cfg, RunContext(base_dir=base_dir, resume_dir=str(tmp_path / "e2"),
                        report=lambda m, d: epochs.append(m[M.EPOCH]) or keep(3, tmp_path / "resumed")(m, d)))
    assert epochs == [3]
    straight, resumed = load_weights(tmp_path / "straight"), load_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not torch.equal(straight["head.weight"], load_weights(tmp_path / "e2")["head.weight"])  # it trained
    # every epoch's metrics, the ones before the resume included: a resumed sweep logs what it missed
    assert [h[M.EPOCH] for h in read_meta(tmp_path / "resumed")["history"]] == [1, 2, 3]


def test_batch_larger_than_the_data_is_a_user_error(random_base):
    cfg, base_dir, _ = random_base
    with pytest.raises(UserError, match="optim.batch_size: 4096"):
        fit(cfg.with_overrides({"optim.batch_size": 4096}), RunContext(base_dir=base_dir))


def test_diverging_run_stops_itself_without_a_checkpoint(random_base):
    cfg, base_dir, _ = random_base
    reports = []
    result = fit(cfg.with_overrides({"optim.lr": 1e6, "optim.grad_clip": None, "optim.epochs": 4}),
                 RunContext(base_dir=base_dir, report=lambda m, d: reports.append((m, d))))
    assert result.metrics[M.DIVERGED] == 1.0
    assert reports[-1][0][M.DIVERGED] == 1.0 and reports[-1][1] is None
    assert len(reports) < 4  # stopped early
