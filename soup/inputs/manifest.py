"""The trial manifest (Parquet), written by the sweep and read by the soup stage, at a local path or
any pyarrow.fs URI. (The checkpoints it names are read by soup.inputs.weights.)

The manifest is the contract between the sweep and the soup: one row per trial with its status,
config, final metrics, checkpoint URI and base checksum. Checkpoint URIs may be local paths or
s3:// / gs:// URIs (read through pyarrow.fs).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from soup.inputs.records import TAG_REASON, TAG_STATUS, TAG_TRIAL_ID, trial_runs
from trainers.tracking import TAG_CHECKPOINT
from trainers.config import TrainConfig
from trainers.uris import absolute

FINISHED = "finished"  # ran all its epochs
STOPPED = "stopped"  # stopped early by the scheduler (ASHA) or the time budget: still an ingredient
DIVERGED = "diverged"  # training loss went non-finite: left out
FAILED = "failed"  # raised (after its retries): left out
RUNNING = "running"  # not ended yet (the sweep's trial runs while it trains)
USABLE = (FINISHED, STOPPED)
MANIFEST_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("checkpoint", pa.string()), ("base_checksum", pa.string()), ("mlflow_run_id", pa.string()),
    ("config", pa.string()), ("metrics", pa.string()),
])


@dataclass
class Ingredient:
    """One trial as the soup sees it. `config` and `metrics` are plain dicts."""

    trial_id: str
    status: str
    checkpoint: str = ""
    base_checksum: str = ""
    mlflow_run_id: str = ""
    reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def ended_status(epoch: float, planned: int) -> str:
    """The status of a trial that ended without an error after `epoch` of its `planned` epochs."""
    return FINISHED if epoch >= planned else STOPPED


def write_manifest(uri: str, ingredients: list[Ingredient]) -> None:
    rows = [{**asdict(i), "config": json.dumps(i.config), "metrics": json.dumps(i.metrics)} for i in ingredients]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    fs, path = pafs.FileSystem.from_uri(absolute(uri))
    fs.create_dir(str(Path(path).parent), recursive=True)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)  # readers never see half a manifest


def read_manifest(uri: str) -> list[Ingredient]:
    fs, path = pafs.FileSystem.from_uri(absolute(uri))
    rows = pq.read_table(path, filesystem=fs).to_pylist()
    return [Ingredient(**{**row, "config": json.loads(row["config"]), "metrics": json.loads(row["metrics"])})
            for row in rows]



def manifest_exists(uri: str) -> bool:
    fs, path = pafs.FileSystem.from_uri(absolute(uri))
    return fs.get_file_info(path).type == pafs.FileType.File


def ingredient_of_run(run: Run) -> Ingredient:
    """A trial as its MLflow run records it (status, reason, config, metrics), without its checkpoint."""
    tags = run.data.tags
    return Ingredient(tags[TAG_TRIAL_ID], tags.get(TAG_STATUS, FAILED), mlflow_run_id=run.info.run_id,
                      reason=tags.get(TAG_REASON, "")[-500:],
                      config=TrainConfig.from_params(run.data.params).model_dump(mode="json"),
                      metrics=dict(run.data.metrics))


def recorded_checkpoint(run: Run) -> str:
    """The last checkpoint a trial's run recorded (it may have been deleted since)."""
    return run.data.tags.get(TAG_CHECKPOINT, "")


def ingredients_from_runs(client: MlflowClient, experiment_id: str, sweep_run_id: str,
                          checkpoint_of: Callable[[Run], str | None] = recorded_checkpoint) -> list[Ingredient]:
    """The manifest rebuilt from the trial runs, each trial's checkpoint being `checkpoint_of(run)`: the
    sweep gives the one Ray Train kept (sweep.manifest); for a sweep that stopped before writing it, the
    last one its run recorded (the soup stage leaves out, and names, any that is gone)."""
    rows = []
    for run in trial_runs(client, experiment_id, sweep_run_id):
        row = ingredient_of_run(run)
        row.checkpoint = checkpoint_of(run) or ""
        if row.status not in (*USABLE, DIVERGED, FAILED):
            row.reason = "had not ended when the sweep stopped (python -m sweep.run --resume finishes it)"
        elif row.status in USABLE and not row.checkpoint:
            row.status, row.reason = FAILED, "ended without a checkpoint"
        rows.append(row)
    return sorted(rows, key=lambda r: r.trial_id)
