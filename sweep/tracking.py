"""MLflow runs of a sweep, written from the sweep driver only (one writer: no sqlite contention).

The sweep run is the parent; a Tune callback opens one child run per trial, logs its params and
per-epoch metrics as results arrive and closes it with the trial's status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray import tune

from soup.records import (KIND_SWEEP, KIND_TRIAL, TAG_CHECKPOINT, TAG_KIND, TAG_PARENT, TAG_TRIAL_ID,
                          find_sweep_run)
from trainers import metrics as M
from trainers.config import TrainConfig
from trainers.errors import UserError

REPORTED = (M.TRAIN_LOSS, M.VAL_LOSS, M.VAL_TOP1, M.LR)


def require_new_sweep(client: MlflowClient, experiment: str) -> None:
    """One experiment is one sweep: refuse an experiment that already holds a sweep run."""
    found = client.get_experiment_by_name(experiment)
    if found and find_sweep_run(client, found):
        raise UserError(f"MLflow experiment {experiment!r} already holds a sweep (one experiment is one "
                        "sweep); choose another mlflow.experiment, or leave it empty for a new name")


def open_sweep_run(client: MlflowClient, experiment: str, tags: dict[str, str], params: dict[str, Any]) -> tuple[str, str]:
    """Create (or reuse an empty) experiment and its sweep run; returns (experiment id, run id)."""
    require_new_sweep(client, experiment)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"sweep-{experiment}", tags={TAG_KIND: KIND_SWEEP, **tags})
    params = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return experiment_id, run.info.run_id


@dataclass
class TrialRecord:
    run_id: str
    overrides: dict[str, Any]
    status: str = "running"
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class TrialRuns(tune.Callback):
    """Tune callback: one MLflow child run per trial, in the driver process."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, base: TrainConfig):
        self.client, self.experiment_id, self.parent_run_id, self.base = client, experiment_id, parent_run_id, base
        self.trials: dict[str, TrialRecord] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.trials:  # a restarted trial keeps its run
            return
        tags = {TAG_KIND: KIND_TRIAL, TAG_PARENT: self.parent_run_id, TAG_TRIAL_ID: trial.trial_id}
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.trial_id}", tags=tags)
        params = self.base.with_overrides(trial.config).to_params()
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        self.trials[trial.trial_id] = TrialRecord(run.info.run_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        record = self.trials[trial.trial_id]
        step, now = int(result.get(M.EPOCH, 0)), int(time.time() * 1000)
        values = {k: float(result[k]) for k in REPORTED if k in result}
        record.metrics.update(values | {M.EPOCH: step})
        self.client.log_batch(record.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        if result.get("checkpoint_path"):
            self.client.set_tag(record.run_id, TAG_CHECKPOINT, result["checkpoint_path"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "finished", "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "failed", "FAILED", (trial.get_error() or "")[-2000:])

    def _close(self, trial, status: str, mlflow_status: str, error: str = "") -> None:
        record = self.trials.get(trial.trial_id)
        if record is None:
            return
        record.status, record.error = status, error
        if error:
            self.client.set_tag(record.run_id, "soupsweep.error", error[-5000:])
        self.client.set_terminated(record.run_id, mlflow_status)
