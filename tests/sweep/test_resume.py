"""`--resume` that cannot continue says so in one line and leaves the sweep run as it was."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_SWEEP, TAG_STORAGE
from trainers.tracking import TAG_KIND
from sweep import run
from sweep.config import SweepConfig
from sweep.driver import CONFIG_ARTIFACT
from tests.conftest import tiny_sweep_tree
from tests.sweep.test_user_errors import one_line_error
from trainers.config import validate


def test_resume_without_the_tune_folder_leaves_the_killed_run_killed(demo_data, tmp_path, capsys):
    cfg = validate(SweepConfig, tiny_sweep_tree(demo_data, tmp_path))
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment_id = client.create_experiment("tiny-sweep", artifact_location=(tmp_path / "artifacts").as_uri())
    sweep_run = client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_STORAGE: cfg.storage_path})
    client.log_dict(sweep_run.info.run_id, cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
    client.set_terminated(sweep_run.info.run_id, "KILLED")  # its driver died; its Tune folder was deleted since

    code = run.main(["--resume", "tiny-sweep", "--tracking-uri", cfg.mlflow.tracking_uri])
    line = one_line_error(capsys, code)
    assert f"{cfg.storage_path}/tiny-sweep" in line and "is gone" in line
    assert client.get_run(sweep_run.info.run_id).info.status == "KILLED"
