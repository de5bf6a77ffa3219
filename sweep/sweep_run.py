"""The sweep's own MLflow run, the parent of its trial runs: one per experiment (one experiment is one
sweep), created in an experiment the MLflow UI opens on its runs (model training) view."""
from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_SWEEP, find_sweep_run
from trainers.tracking import MODEL_TRAINING, TAG_KIND, log_params, open_experiment
from trainers.errors import UserError


def require_new_sweep(client: MlflowClient, experiment: str) -> None:
    """One experiment is one sweep: refuse an experiment that already holds a sweep run."""
    found = client.get_experiment_by_name(experiment)
    if found and find_sweep_run(client, found):
        raise UserError(f"MLflow experiment {experiment!r} already holds a sweep (one experiment is one "
                        "sweep); choose another mlflow.experiment, leave it empty for a new name, "
                        f"or continue it with --resume {experiment}")


def open_sweep_run(client: MlflowClient, experiment: str, tags: dict[str, str], params: dict[str, Any]) -> tuple[str, str]:
    """Create (or reuse an empty) experiment and its sweep run; returns (experiment id, run id)."""
    require_new_sweep(client, experiment)
    experiment_id = open_experiment(client, experiment)
    for key, value in MODEL_TRAINING.items():  # also an empty experiment the user made
        client.set_experiment_tag(experiment_id, key, value)
    run = client.create_run(experiment_id, run_name=f"sweep-{experiment}", tags={TAG_KIND: KIND_SWEEP, **tags})
    log_params(client, run.info.run_id, params)
    return experiment_id, run.info.run_id

