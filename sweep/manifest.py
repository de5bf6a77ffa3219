"""The trial manifest of a sweep, built from what MLflow recorded and what Ray Train kept."""
from __future__ import annotations

import logging

from mlflow.tracking import MlflowClient

from soup.inputs.manifest import FAILED, USABLE, Ingredient, ingredient_of_run
from soup.inputs.records import trial_runs
from sweep.train_storage import final_checkpoint
from trainers.checkpoint import read_meta

log = logging.getLogger(__name__)


def collect_ingredients(client: MlflowClient, experiment_id: str, sweep_run_id: str, storage: str,
                        name: str) -> list[Ingredient]:
    """One row per trial run of the sweep: status, final checkpoint, the checksum its meta.json states."""
    rows = []
    for run in trial_runs(client, experiment_id, sweep_run_id):
        row = ingredient_of_run(run)
        checkpoint = final_checkpoint(storage, name, row.trial_id)
        if checkpoint:
            row.checkpoint = checkpoint
            row.base_checksum = read_meta(checkpoint)["base_checksum"]
        elif row.status in USABLE:
            row.status, row.reason = FAILED, "ended without a checkpoint"
        rows.append(row)
    return sorted(rows, key=lambda r: r.trial_id)
