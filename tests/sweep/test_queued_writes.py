"""The trial runs' queued MLflow writes: an outage of a real `mlflow server` costs nothing but time."""
from __future__ import annotations

import logging
import threading
import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from trainers.tracking import artifact_location
from sweep.queued_writes import QueuedWrites
from tests.acceptance.services import MlflowServer


@pytest.mark.slow
def test_writes_wait_out_a_server_outage_and_keep_their_order(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("queued")
        writes = QueuedWrites(client, max_backoff_s=2)
        server.stop()
        started = time.monotonic()
        run_id = writes.create_run(experiment_id, run_name="trial", tags={"kind": "trial"})
        for step in range(3):
            writes.log_batch(run_id, metrics=[Metric("val/top1", step / 10, 0, step)])
        writes.set_terminated(run_id, "FINISHED")
        assert time.monotonic() - started < 1  # the caller never waits for the server
        assert not writes.flush(3) and writes.pending() == 5 and writes.run_id(run_id) is None
        server.start()
        assert writes.flush(240) and writes.pending() == 0
        run = client.get_run(writes.run_id(run_id))
        assert run.info.status == "FINISHED" and run.data.tags["kind"] == "trial"
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/top1")] == [
            (0, 0.0), (1, 0.1), (2, 0.2)]
    finally:
        server.stop()


def test_a_refused_write_is_left_out_and_the_next_ones_are_written(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("refused")
    writes = QueuedWrites(client)
    writes.set_tag("0" * 32, "kind", "trial")  # no such run: MLflow answers RESOURCE_DOES_NOT_EXIST
    run_id = writes.create_run(experiment_id, run_name="trial")
    writes.set_tag(run_id, "kind", "trial")
    assert writes.flush(60)
    assert client.get_run(writes.run_id(run_id)).data.tags["kind"] == "trial"


def test_a_table_is_written_once_and_computed_on_the_writer_thread(tmp_path, monkeypatch, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tables", artifact_location=artifact_location(uri))
    writes = QueuedWrites(client)
    run_id = writes.create_run(experiment_id, run_name="trial")
    table = {"class": ["cat", "dog"], "f1": [0.5, 1.0], "support": [3, 4], "epoch": [2, 2]}
    computed_on = []

    def compute():
        computed_on.append(threading.current_thread().name)
        return table

    def unreadable():
        raise FileNotFoundError("no meta.json in checkpoint x")

    with caplog.at_level(logging.WARNING, logger="sweep.queued_writes"):
        writes.log_table(run_id, compute, "per_class_val.json")
        writes.log_table(run_id, {**table, "f1": [0.0, 0.0]}, "per_class_val.json")  # a retry, a resumed sweep
        writes.log_table(run_id, unreadable, "other.json")
        writes.set_tag(run_id, "kind", "trial")  # the writes behind an unreadable table go on
        assert writes.flush(60)
    assert computed_on == ["mlflow-writes"]
    assert "table other.json of MLflow run" in caplog.text and "no meta.json in checkpoint x" in caplog.text
    real_id = writes.run_id(run_id)
    assert client.get_run(real_id).data.tags["kind"] == "trial"
    assert {a.path for a in client.list_artifacts(real_id)} == {"per_class_val.json"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # load_table searches through the fluent API
    loaded = client.load_table(experiment_id, "per_class_val.json", run_ids=[real_id])
    assert loaded.to_dict(orient="list") == table  # the first table, once
