"""The floor of bench/trial_overhead.py: Tune trials of a bare Ray Train TorchTrainer, nothing of ours.

Its loop has no model and no data: every rank reports once per epoch, rank 0 with a one-file
checkpoint. Same workers, resources, backend and concurrency as the sweep it is compared with.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ray import tune


def bare_worker(config: dict) -> None:
    import ray.train

    worker_start = time.time()
    for epoch in range(config["epochs"]):
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            folder = Path(tempfile.mkdtemp(prefix="bare-ckpt-"))
            (folder / "weights").write_bytes(b"0" * 1024)
            checkpoint = ray.train.Checkpoint.from_directory(str(folder))
        ray.train.report({"epoch": epoch + 1, "worker_start": worker_start, "report": time.time()},
                         checkpoint=checkpoint)


def bare_trial(config: dict) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    for key, value in config["env"].items():  # the Train settings under test, as sweep.trial applies them
        os.environ.setdefault(key, value)
    started = time.time()
    trainer = TorchTrainer(bare_worker, train_loop_config={"epochs": config["epochs"]},
                           torch_config=TorchConfig(backend="gloo"),
                           scaling_config=ScalingConfig(num_workers=config["workers"],
                                                        resources_per_worker={"CPU": config["cpus"]}),
                           run_config=RunConfig(name=f"bare-{tune.get_context().get_trial_id()}",
                                                storage_path=config["storage"]))
    metrics = trainer.fit().metrics
    tune.report({**metrics, "trial_start": started, "fit_end": time.time()})


class TrialStartsAndEnds(tune.Callback):
    def __init__(self):
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.starts[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ends[trial.trial_id] = time.time()


def floor_rows(storage: str, trials: int, concurrency: int, driver_cpus: float, space: dict,
               reuse_actors: bool) -> list[dict[str, float]]:
    """Run the bare trials; per trial its stamps named as the sweep's timeline: scheduled (Tune started
    it), train_start (loop entered), last_step (last report), trial_end."""
    marks = TrialStartsAndEnds()
    tuner = tune.Tuner(tune.with_resources(bare_trial, {"cpu": driver_cpus}), param_space={**space, "storage": storage},
                       tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrency,
                                                   reuse_actors=reuse_actors),
                       run_config=tune.RunConfig(name="bare", storage_path=storage, callbacks=[marks], verbose=0))
    return [{"trial": r.metrics["trial_id"], "scheduled": marks.starts[r.metrics["trial_id"]],
             "train_start": r.metrics["worker_start"], "last_step": r.metrics["report"],
             "trial_end": marks.ends[r.metrics["trial_id"]]} for r in tuner.fit()]
