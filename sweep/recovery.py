"""What a resumed sweep repairs before Tune continues: the epochs a killed driver never logged, and
the checkpoints its orphaned Train workers wrote after it died.

Why backfill from checkpoints rather than persist the queued MLflow writes: the epochs a killed driver
loses are those in flight, whose results may never have reached the driver at all (killed between
Ray Train registering a checkpoint and Tune's callback; Train's controller may even register more
after the driver died), so no journal of the driver's writes could hold them. But Ray Train
registers an epoch's checkpoint together with its metrics, the resumed trial continues after the
last one it kept, and that checkpoint's meta.json holds the metrics of every epoch up to it
(`history`). So every epoch is logged once: those up to the kept checkpoint from it, the rest when
they are trained again.
"""
from __future__ import annotations

import logging
import time

import pyarrow.fs as pafs
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from soup.inputs.records import TAG_TRIAL_ID, trial_runs
from trainers.tracking import TAG_CHECKPOINT
from sweep.tracking import REPORTED
from sweep.train_storage import checkpoint_uri, final_checkpoint, remove_unkept_checkpoints, train_run_prefix
from trainers import metrics as M
from trainers.checkpoint import read_meta
from trainers.uris import absolute

log = logging.getLogger(__name__)


def backfill_checkpoint_epochs(client: MlflowClient, experiment_id: str, sweep_run_id: str, storage: str,
                               experiment: str) -> int:
    """Log, for every trial run, the epochs missing from it among those of the checkpoint Ray Train kept
    last (its meta.json's history; its own metrics for a checkpoint written before there was one);
    returns how many runs got epochs."""
    logged = 0
    for run in trial_runs(client, experiment_id, sweep_run_id):
        latest = final_checkpoint(storage, experiment, run.data.tags[TAG_TRIAL_ID])
        if not latest:
            continue
        meta = read_meta(latest)
        epochs = {m.step for m in client.get_metric_history(run.info.run_id, M.EPOCH)}
        missing = [h for h in meta.get("history", [meta["metrics"]]) if int(h[M.EPOCH]) not in epochs]
        if not missing:
            continue
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, int(h[M.EPOCH]))
                                                   for h in missing for k, v in h.items() if k in REPORTED])
        client.set_tag(run.info.run_id, TAG_CHECKPOINT, latest)
        log.info("trial run %s: logged epochs %s from its checkpoint %s (the killed driver had not logged them)",
                 run.info.run_id, [int(h[M.EPOCH]) for h in missing], latest)
        logged += 1
    return logged


def remove_orphan_checkpoints(storage: str, experiment: str) -> list[str]:
    """Delete the checkpoint folders of the sweep's Train runs that Ray Train's snapshot does not keep
    (written by workers of a killed driver after their controller died, or left half-uploaded): Train
    would have deleted them (num_to_keep) or never registered them. Returns the folders deleted."""
    fs, root = pafs.FileSystem.from_uri(absolute(storage))
    removed = []
    for run in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if run.type == pafs.FileType.Directory and run.base_name.startswith(train_run_prefix(experiment)):
            removed += remove_unkept_checkpoints(checkpoint_uri(storage, run.path))
    return removed
