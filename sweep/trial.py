"""One trial: a Tune function that drives a Ray Train TorchTrainer (the Train V2 pattern).

Tune samples the overrides; the base training config, the base checkpoint and the storage travel
in a TrialSpec (a Ray worker is a fresh process, so nothing is read from module globals).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from sweep.space import resolve_overrides
from sweep.storage_faults import fit_through_storage_faults
from sweep.train_storage import checkpoint_uri, remove_unkept_checkpoints, train_run_folder, train_run_name
from trainers import metrics as M
from trainers.config import TrainConfig

# Ray Train V2 settings a trial runs with, unless the environment already sets them (measured in
# docs/benchmarks.md, "What the sweep sets, and why"). The controller polls its workers every 2 s by
# default, and every report and a trial's end wait for the next poll; a poll is one small RPC per
# worker, and at 0.5 s each trial ends seconds earlier.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# Train starts a preemption watcher (one more process per trial) that drains workers on a spot node
# about to go; a cluster of this machine only, started by the sweep, has no such node.
LOCAL_CLUSTER_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def train_env(local_cluster: bool) -> dict[str, str]:
    """The Train settings for the sweep's trials, leaving out any the driver's environment sets."""
    wanted = {**TRAIN_ENV, **(LOCAL_CLUSTER_ENV if local_cluster else {})}
    return {key: value for key, value in wanted.items() if key not in os.environ}


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
    storage_patience_s: float = 600.0  # resources.storage_patience_s
    anytime: bool = False  # offer the final checkpoint to the sweep's anytime soup
    objective: str = "val_top1"  # search.objective
    train_env: dict[str, str] = field(default_factory=dict)  # train_env(): Train reads them from the environment


def run_trial(overrides: dict[str, Any], spec: TrialSpec) -> None:
    started = time.time()  # the trial's first phase stamp (timeline/trial_start), reported by its workers
    trial_id = tune.get_context().get_trial_id()
    for key, value in spec.train_env.items():  # Train passes them on to its controller and workers
        os.environ.setdefault(key, value)
    cfg = TrainConfig.model_validate(spec.base_config).with_overrides(resolve_overrides(overrides))
    resources = {"CPU": spec.cpus_per_worker, "GPU": spec.gpus_per_worker}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "base_dir": spec.base_dir, "trial_id": trial_id,
                           "trial_start": started},
        torch_config=TorchConfig(backend="nccl" if spec.gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=train_run_name(spec.experiment, trial_id),
            storage_path=spec.storage_path,
            callbacks=[ReportToTune(soup_gain_default(spec.objective))],
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the last epoch: the ingredient
            failure_config=FailureConfig(max_failures=spec.max_failures),
        ),
    )
    run_folder = train_run_folder(spec.storage_path, spec.experiment, trial_id)
    result = fit_through_storage_faults(trainer.fit, run_folder, spec.storage_patience_s,
                                        before_retry=lambda: remove_unkept_checkpoints(run_folder))
    fitted = time.time()
    if spec.anytime:  # the offer's time shows as timeline/fit_end -> timeline/trial_end
        tune.report({**soup_result(spec, trial_id, cfg, result), f"{M.TIMELINE}fit_end": fitted})


# A trial's own process imports this module before Tune starts the trial. It needs neither the training
# loop (open_clip, torchvision: the workers import it) nor the anytime soup's modules unless the sweep
# keeps one, so those are imported where they are used: a trial starts seconds earlier (docs/benchmarks.md).
def train_worker(payload: dict[str, Any]) -> None:
    """The Ray Train workers' entry (sweep.worker.train_worker), imported on the workers only."""
    from sweep.worker import train_worker as train

    train(payload)


def soup_gain_default(objective: str) -> dict[str, float]:
    """The soup gain before the trial was offered, in every result when the searcher reads it."""
    return {M.SOUP_GAIN: 0.0} if objective == "soup_gain" else {}


def soup_result(spec: TrialSpec, trial_id: str, cfg: TrainConfig, result) -> dict[str, float | str]:
    """The trial's last Tune result: its anytime-soup outcome and the soup's state after it (what the
    sweep run shows), beside the last epoch's metrics (repeated so that every result carries what the
    scheduler reads)."""
    from sweep.soup_actor import offer_to_soup

    last = result.metrics or {}  # Train V2: the metrics reported with the last checkpoint
    complete = last.get(M.EPOCH) == cfg.optim.epochs  # diverged runs end without a final checkpoint
    checkpoint = checkpoint_uri(spec.storage_path, result.checkpoint.path) if result.checkpoint else None
    return {M.EPOCH: last.get(M.EPOCH, 0), M.VAL_TOP1: last.get(M.VAL_TOP1, 0.0),
            **offer_to_soup(spec.experiment, trial_id, checkpoint, complete)}


class ReportToTune(TuneReportCallback):
    """Forwards rank 0's reports to Tune, with defaults for keys that the search algorithm reads in
    every result (the soup gain is only known once the trial has been offered to the soup)."""

    def __init__(self, defaults: dict[str, float]):
        super().__init__()
        self.defaults = defaults

    def after_report(self, run_context, metrics, checkpoint):
        # Stamped when the controller has the report, its checkpoint persisted (timeline/received).
        received = {**self.defaults, **metrics[0], f"{M.TIMELINE}received": time.time()}
        super().after_report(run_context, [received, *metrics[1:]], checkpoint)
