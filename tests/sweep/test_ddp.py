"""A 2-worker Ray Train trial really synchronises: both ranks end with identical weights, although
each trained on its own half of the data."""
from __future__ import annotations

import pytest

from tests.conftest import data_section

pytestmark = pytest.mark.slow


def ddp_worker(payload):
    import ray.train
    import ray.train.torch
    from pathlib import Path

    from trainers.config import TrainConfig
    from trainers.distributed import rank_and_world
    from trainers.data.loader import epoch_rows, row_groups
    from trainers.data.store import open_shards
    from trainers.loop import RunContext, fit
    from trainers.model import state_checksum
    from sweep.worker import report

    rank, world = rank_and_world()
    cfg = TrainConfig.model_validate(payload["config"])
    result = fit(cfg, RunContext(base_dir=payload["base_dir"], device=ray.train.torch.get_device(), report=report))
    out = Path(payload["out"])
    (out / f"rank{rank}.sha").write_text(state_checksum(result.model.state_dict()))
    seen = epoch_rows(row_groups(open_shards(cfg.data.train)), cfg.seed, 0, rank, world)  # what the loader read
    (out / f"rank{rank}.samples").write_text(",".join(map(str, seen)))


def test_two_ranks_hold_identical_weights(ray_cluster, demo_data, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainers.base import write_base_checkpoint
    from trainers.config import TrainConfig

    cfg = TrainConfig.model_validate({"data": data_section(demo_data), "optim": {"epochs": 2, "lr": 3e-3}})
    base_checksum = write_base_checkpoint(cfg, tmp_path / "base")
    trainer = TorchTrainer(
        ddp_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "base_dir": str(tmp_path / "base"),
                           "out": str(tmp_path)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="ddp-sync", storage_path=str(tmp_path / "storage")),
    )
    result = trainer.fit()
    assert result.metrics["epoch"] == 2 and result.checkpoint is not None
    rank0, rank1 = (tmp_path / "rank0.sha").read_text(), (tmp_path / "rank1.sha").read_text()
    assert rank0 == rank1 != base_checksum  # trained, and in sync
    samples = [set((tmp_path / f"rank{r}.samples").read_text().split(",")) for r in (0, 1)]
    assert not samples[0] & samples[1]  # each rank saw other images
