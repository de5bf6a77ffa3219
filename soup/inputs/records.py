"""How a sweep is recorded in MLflow, and finding it again.

The MLflow experiment is the sweep's identity: it holds one sweep run (the parent), one child run
per trial and one run per soup stage. The sweep run's tags say where the storage, the manifest
and the base checkpoint are; everything else is found from there.
"""
from __future__ import annotations

from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainers.errors import UserError
from trainers.tracking import TAG_KIND

KIND_SWEEP, KIND_TRIAL, KIND_SOUP = "sweep", "trial", "soup"
TAG_STORAGE = "soupsweep.storage"
TAG_MANIFEST = "soupsweep.manifest"
TAG_BASE = "soupsweep.base"
TAG_BASE_CHECKSUM = "soupsweep.base_checksum"
TAG_TRIAL_ID = "soupsweep.trial_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_STATUS = "soupsweep.status"  # on a trial run: running, finished, stopped, diverged or failed
TAG_REASON = "soupsweep.reason"  # on a trial run: why it stopped, diverged or failed


def find_experiment(client: MlflowClient, id_or_name: str) -> Experiment:
    """The experiment with this id or name; a UserError naming some that exist otherwise."""
    experiment = client.get_experiment_by_name(id_or_name)
    if experiment is None and id_or_name.isdigit():
        try:
            experiment = client.get_experiment(id_or_name)
        except MlflowException:
            experiment = None
    if experiment is None:
        names = [e.name for e in client.search_experiments(max_results=10)]
        raise UserError(f"experiment {id_or_name!r} not found at {client.tracking_uri}; existing: {names}. "
                        "Pass the experiment id or name the sweep printed, and the same --tracking-uri")
    return experiment


def find_sweep_run(client: MlflowClient, experiment: Experiment) -> Run | None:
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_SWEEP}'",
                              max_results=1)
    return runs[0] if runs else None


def require_sweep_run(client: MlflowClient, experiment: Experiment) -> Run:
    run = find_sweep_run(client, experiment)
    if run is None:
        raise UserError(f"experiment {experiment.name!r} holds no soupsweep sweep run; "
                        "run `python -m sweep.run` with mlflow.experiment set to it first")
    return run


def trial_runs(client: MlflowClient, experiment_id: str, sweep_run_id: str, status: str | None = None) -> list[Run]:
    """The trial runs of a sweep (those with `status` only, when given)."""
    query = f"tags.`{TAG_PARENT}` = '{sweep_run_id}' and tags.`{TAG_KIND}` = '{KIND_TRIAL}'"
    if status:
        query += f" and tags.`{TAG_STATUS}` = '{status}'"
    return client.search_runs([experiment_id], query, max_results=10_000)
