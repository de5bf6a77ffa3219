"""The trial runs' queued MLflow writes: an outage of a real `mlflow server` costs nothing but time."""
from __future__ import annotations

import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

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
