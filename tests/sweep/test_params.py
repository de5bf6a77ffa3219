"""The sweep run's params are serialised as the trial runs' are: JSON for everything but strings."""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from sweep.config import SweepConfig
from trainers.tracking import log_params


def test_sweep_params_are_json_like_the_trials(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("params", artifact_location=str(tmp_path / "artifacts")))
    cfg = SweepConfig.model_validate({"search": {"space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}})
    log_params(client, run.info.run_id, cfg.to_params())
    params = client.get_run(run.info.run_id).data.params
    assert params["model.pretrained"] == "null" and params["model.compile"] == "false"  # not None, False
    assert json.loads(params["search.space.optim.lr"]) == {"loguniform": [1e-4, 1e-2]}
    trial = cfg.train_config().to_params()
    assert {k: params[k] for k in trial} == trial  # the keys both have, written the same way
