"""clusters/mlflow_db.py: the head's MLflow database survives `ray down` through the bucket."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def mlflow_db_script():
    spec = importlib.util.spec_from_file_location("mlflow_db", ROOT / "clusters" / "mlflow_db.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backup_then_restore_on_a_new_head(tmp_path, monkeypatch, capsys):
    script = mlflow_db_script()
    db = tmp_path / "old-head" / "mlflow.db"
    db.parent.mkdir()
    client = MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.create_experiment("sweep-a"))
    client.log_metric(run.info.run_id, "heldout/top1", 0.75)
    client.set_terminated(run.info.run_id)
    monkeypatch.setenv("SOUPSWEEP_STORAGE", f"file://{tmp_path / 'bucket' / 'soupsweep'}")

    assert script.main(["backup", str(db)]) == 0  # while the "server" still has it open
    assert (tmp_path / "bucket" / "soupsweep" / "mlflow" / "mlflow.db").is_file()
    restored = tmp_path / "new-head" / "mlflow.db"
    assert script.main(["restore", str(restored)]) == 0
    again = MlflowClient(f"sqlite:///{restored}")
    assert again.get_run(run.info.run_id).data.metrics == {"heldout/top1": 0.75}
    assert "restored" in capsys.readouterr().out


def test_restore_without_a_backup_starts_empty_and_backup_needs_a_destination(tmp_path, monkeypatch, capsys):
    script = mlflow_db_script()
    fresh = tmp_path / "head" / "mlflow.db"
    assert script.main(["restore", str(fresh), "--to", str(tmp_path / "empty-bucket" / "mlflow.db")]) == 0
    assert not fresh.exists() and "no backup" in capsys.readouterr().out
    monkeypatch.delenv("SOUPSWEEP_STORAGE", raising=False)
    assert script.main(["backup", str(fresh)]) == 2
    assert "SOUPSWEEP_STORAGE is not set" in capsys.readouterr().err
