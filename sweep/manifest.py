"""The trial manifest of a sweep, built from what MLflow recorded and what Ray Train kept."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from soup.inputs.manifest import Ingredient, ingredients_from_runs
from soup.inputs.records import TAG_TRIAL_ID
from sweep.train_storage import final_checkpoint
from trainers.checkpoint import read_meta


def collect_ingredients(client: MlflowClient, experiment_id: str, sweep_run_id: str, storage: str,
                        name: str) -> list[Ingredient]:
    """One row per trial run of the sweep: status, final checkpoint (the one Ray Train kept), the
    checksum its meta.json states."""
    rows = ingredients_from_runs(client, experiment_id, sweep_run_id,
                                 lambda run: final_checkpoint(storage, name, run.data.tags[TAG_TRIAL_ID]))
    for row in rows:
        if row.checkpoint:
            row.base_checksum = read_meta(row.checkpoint)["base_checksum"]
    return rows
