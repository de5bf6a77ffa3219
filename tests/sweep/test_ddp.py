"""A 2-worker Ray Train trial really synchronises: both ranks end with identical weights, although
each trained on its own half of the data (as each rank's loader recorded what it read)."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import data_section

pytestmark = pytest.mark.slow


def ddp_worker(payload):
    import hashlib
    import json
    from pathlib import Path

    import ray.train
    import ray.train.torch

    from trainers.config import TrainConfig
    from trainers.data.loader import TrainLoader
    from trainers.distributed import rank_and_world
    from trainers.loop import RunContext, fit
    from trainers.model import state_checksum
    from sweep.worker import report

    read: dict[int, list[str]] = {}  # epoch -> digests of the images this rank's loader read from the store
    chunks = TrainLoader.chunks

    def recorded(self, epoch, gen):
        for blobs, labels in chunks(self, epoch, gen):
            read.setdefault(epoch, []).extend(hashlib.sha1(b).hexdigest() for b in blobs)
            yield blobs, labels

    TrainLoader.chunks = recorded  # observes this worker process's real loader; reads are unchanged
    rank, world = rank_and_world()
    cfg = TrainConfig.model_validate(payload["config"])
    result = fit(cfg, RunContext(base_dir=payload["base_dir"], device=ray.train.torch.get_device(), report=report))
    out = Path(payload["out"])
    (out / f"rank{rank}.sha").write_text(state_checksum(result.model.state_dict()))
    (out / f"rank{rank}.read.json").write_text(json.dumps(read))


def test_two_ranks_hold_identical_weights(ray_cluster, demo_data, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainers.base import write_base_checkpoint
    from trainers.config import TrainConfig
    from trainers.data.store import open_shards

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
    read = [json.loads((tmp_path / f"rank{r}.read.json").read_text()) for r in (0, 1)]
    train_images = {hashlib.sha1(blob).hexdigest() for shard in open_shards(cfg.data.train)
                    for blob in shard.read(columns=["image"]).column("image").to_pylist()}
    trained = len(train_images) // 2 // cfg.optim.batch_size * cfg.optim.batch_size  # per rank and epoch
    for epoch in ("0", "1"):
        first, second = set(read[0][epoch]), set(read[1][epoch])
        assert len(first) == len(read[0][epoch]) and len(second) == len(read[1][epoch])  # no image twice
        assert not first & second  # each rank read other images
        assert first | second <= train_images and min(len(first), len(second)) >= trained
    # (the order within an epoch is the shuffle buffer's, after these reads: tests/trainers/test_loader.py)
