"""One trial: a Tune function that drives a Ray Train TorchTrainer (the Train V2 pattern).

Tune samples the overrides; the base training config, the base checkpoint and the storage travel
in a TrialSpec (a Ray worker is a fresh process, so nothing is read from module globals).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from sweep.space import resolve_overrides
from sweep.worker import train_worker
from trainers.config import TrainConfig


@dataclass
class TrialSpec:
    base_config: dict[str, Any]  # TrainConfig as JSON
    base_dir: str  # URI of the base checkpoint (shared initialisation)
    storage_path: str
    experiment: str  # Tune experiment name
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int


def train_run_name(experiment: str, trial_id: str) -> str:
    """Deterministic, so that a restored sweep finds each trial's Train run (and its checkpoint)."""
    return f"{experiment}-train-{trial_id}"


def run_trial(overrides: dict[str, Any], spec: TrialSpec) -> None:
    trial_id = tune.get_context().get_trial_id()
    cfg = TrainConfig.model_validate(spec.base_config).with_overrides(resolve_overrides(overrides))
    resources = {"CPU": spec.cpus_per_worker, "GPU": spec.gpus_per_worker}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "base_dir": spec.base_dir, "trial_id": trial_id},
        torch_config=TorchConfig(backend="nccl" if spec.gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=train_run_name(spec.experiment, trial_id),
            storage_path=spec.storage_path,
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the last epoch: the ingredient
            failure_config=FailureConfig(max_failures=spec.max_failures),
        ),
    )
    trainer.fit()
