"""The sweep's own MLflow run, the parent of its trial runs: one per experiment (one experiment is one
sweep), created in an experiment the MLflow UI opens on its runs (model training) view; and one sweep
of a name per storage folder."""
from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from soup.inputs.manifest import manifest_exists
from soup.inputs.records import KIND_SWEEP, find_sweep_run
from trainers.errors import UserError
from trainers.tracking import MODEL_TRAINING, TAG_KIND, log_params, open_experiment
from trainers.uris import absolute


def require_new_sweep(client: MlflowClient, experiment: str) -> None:
    """One experiment is one sweep: refuse an experiment that already holds a sweep run."""
    found = client.get_experiment_by_name(experiment)
    if found and find_sweep_run(client, found):
        raise UserError(f"MLflow experiment {experiment!r} already holds a sweep (one experiment is one "
                        "sweep); choose another mlflow.experiment, leave it empty for a new name, "
                        f"or continue it with --resume {experiment}")


def require_unused_storage(storage: str, name: str, tune_dir: str, manifest: str) -> None:
    """One storage folder holds one sweep of a name: a sweep run again under a name whose Tune folder or
    manifest is already in `storage` (its MLflow records elsewhere: another database, or a deleted one)
    would overwrite that sweep's base and manifest and mix its trials into the old Tune experiment."""
    if tune.Tuner.can_restore(absolute(tune_dir)) or manifest_exists(manifest):
        raise UserError(f"storage_path {storage} already holds a sweep named {name!r} ({tune_dir}); a new sweep "
                        "would overwrite its files: choose another mlflow.experiment or storage_path, or continue "
                        f"it with --resume {name} --tracking-uri <the database it was recorded in>")


def open_sweep_run(client: MlflowClient, experiment: str, tags: dict[str, str], params: dict[str, Any]) -> tuple[str, str]:
    """Create (or reuse an empty) experiment and its sweep run; returns (experiment id, run id)."""
    require_new_sweep(client, experiment)
    experiment_id = open_experiment(client, experiment)
    for key, value in MODEL_TRAINING.items():  # also an empty experiment the user made
        client.set_experiment_tag(experiment_id, key, value)
    run = client.create_run(experiment_id, run_name=f"sweep-{experiment}", tags={TAG_KIND: KIND_SWEEP, **tags})
    log_params(client, run.info.run_id, params)
    return experiment_id, run.info.run_id

