"""The MLflow run of one training run (`python -m trainers.run` with a tracking URI): the config as params
(JSON, as trial runs have them), every epoch's metrics, the final val/test/shift metrics and the
checkpoint's path as a tag. Written from the one process that trains (rank 0 of nothing: no Ray, no DDP).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from trainers.config import TrainConfig
from trainers.owner import this_process
from trainers.tracking import (TAG_CHECKPOINT, TAG_KIND, TAG_OWNER, MlflowConfig, end_killed_runs, log_params,
                               open_experiment)

KIND_RUN = "run"  # TAG_KIND of a single run: the soup stage's queries (sweep, trial, soup runs) skip it


class RunRecord:
    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str):
        self.client, self.experiment_id, self.run_id = client, experiment_id, run_id
        self.status = "FINISHED"  # how the run ends when nothing raised (FAILED: it diverged, as a trial)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Metrics at `step` (the epoch): numbers only, one batch."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))])

    def checkpoint(self, path: Path) -> None:
        self.client.set_tag(self.run_id, TAG_CHECKPOINT, str(path.resolve()))


@contextlib.contextmanager
def run_record(section: MlflowConfig | None, experiment: str, cfg: TrainConfig, name: str) -> Iterator[RunRecord | None]:
    """An open MLflow run for the block (None without a tracking section); it ends with `record.status`,
    or FAILED when the block raised."""
    if section is None:
        yield None
        return
    client = MlflowClient(section.tracking_uri)
    experiment_id = open_experiment(client, experiment)
    end_killed_runs(client, experiment_id, KIND_RUN)
    run = client.create_run(experiment_id, run_name=name, tags={TAG_KIND: KIND_RUN, TAG_OWNER: this_process()})
    record = RunRecord(client, experiment_id, run.info.run_id)
    log_params(client, record.run_id, cfg.to_params())
    try:
        yield record
    except BaseException:
        client.set_terminated(record.run_id, "FAILED")
        raise
    client.set_terminated(record.run_id, record.status)
