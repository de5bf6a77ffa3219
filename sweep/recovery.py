"""What a resumed sweep repairs before Tune continues: the epochs a killed driver never logged, and
the checkpoints its orphaned Train workers wrote after it died.

Why backfill from checkpoints rather than persist the queued MLflow writes: the epoch a killed driver
loses is the one in flight, whose result may never have reached the driver at all (killed between
Ray Train registering the checkpoint and Tune's callback), so no journal of the driver's writes could
hold it. But Ray Train registers an epoch's checkpoint together with its metrics, the resumed trial
continues after it, and its meta.json holds exactly those metrics. Epochs before it were logged when
they happened, unless MLflow was down at the same time as the driver died (not repaired: see the
README's reliability paragraph).
"""
from __future__ import annotations

import logging
import time

import pyarrow.fs as pafs
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from soup.records import TAG_CHECKPOINT, TAG_TRIAL_ID
from sweep.tracking import REPORTED, trial_runs_of
from sweep.trial import checkpoint_uri, kept_checkpoint, remove_unkept_checkpoints, train_run_name
from trainers import metrics as M
from trainers.checkpoint import read_meta

log = logging.getLogger(__name__)


def backfill_checkpoint_epochs(client: MlflowClient, experiment_id: str, sweep_run_id: str, storage: str,
                               experiment: str) -> int:
    """Log, for every trial run, the metrics of the checkpoint Ray Train kept last if that epoch is
    missing from the run; returns how many epochs were logged."""
    logged = 0
    for run in trial_runs_of(client, experiment_id, sweep_run_id):
        run_folder = f"{storage}/{train_run_name(experiment, run.data.tags[TAG_TRIAL_ID])}"
        latest = kept_checkpoint(run_folder)
        if not latest:
            continue
        meta = read_meta(latest)
        epochs = {m.step for m in client.get_metric_history(run.info.run_id, M.EPOCH)}
        if meta["epoch"] in epochs:
            continue
        now = int(time.time() * 1000)
        values = {M.EPOCH: float(meta["epoch"]), **{k: float(v) for k, v in meta["metrics"].items() if k in REPORTED}}
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, int(meta["epoch"])) for k, v in values.items()])
        client.set_tag(run.info.run_id, TAG_CHECKPOINT, latest)
        log.info("trial run %s: logged epoch %d from its checkpoint %s (the killed driver had not logged it)",
                 run.info.run_id, meta["epoch"], latest)
        logged += 1
    return logged


def remove_orphan_checkpoints(storage: str, experiment: str) -> list[str]:
    """Delete the checkpoint folders of the sweep's Train runs that Ray Train's snapshot does not keep
    (written by workers of a killed driver after their controller died, or left half-uploaded): Train
    would have deleted them (num_to_keep) or never registered them. Returns the folders deleted."""
    fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else f"file://{storage}")
    removed = []
    for run in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if run.type == pafs.FileType.Directory and run.base_name.startswith(f"{experiment}-train-"):
            removed += remove_unkept_checkpoints(checkpoint_uri(storage, run.path))
    return removed
