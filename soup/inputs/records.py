"""How a sweep is recorded in MLflow, and finding it again.

The MLflow experiment is the sweep's identity: it holds one sweep run (the parent), one child run
per trial and one run per soup stage. The sweep run's tags say where the storage, the manifest
and the base checkpoint are; everything else is found from there.
"""
from __future__ import annotations

import os
from pathlib import Path

from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainers.errors import UserError

TAG_KIND = "soupsweep.kind"
KIND_SWEEP, KIND_TRIAL, KIND_SOUP = "sweep", "trial", "soup"
TAG_STORAGE = "soupsweep.storage"
TAG_MANIFEST = "soupsweep.manifest"
TAG_BASE = "soupsweep.base"
TAG_BASE_CHECKSUM = "soupsweep.base_checksum"
TAG_TRIAL_ID = "soupsweep.trial_id"
TAG_CHECKPOINT = "soupsweep.checkpoint"
TAG_PARENT = "mlflow.parentRunId"


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
                              max_results=2)
    return runs[0] if runs else None


def require_sweep_run(client: MlflowClient, experiment: Experiment) -> Run:
    run = find_sweep_run(client, experiment)
    if run is None:
        raise UserError(f"experiment {experiment.name!r} holds no soupsweep sweep run; "
                        "run `python -m sweep.run` with mlflow.experiment set to it first")
    return run


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite database, in `mlartifacts/` (MLflow's
    default, ./mlruns of whatever directory the process runs in, would scatter them); a server decides
    for itself (None). The sweep and the soup stage create experiments the same way."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix):]).parent / "mlartifacts").as_uri()
    return None


def absolute_sqlite(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db: Tune and Ray jobs change directories."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri
