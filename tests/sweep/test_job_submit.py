"""`ray start --head` + `ray job submit -- python -m sweep.run`: the sweep attaches to that cluster."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL
from trainers.tracking import TAG_KIND
from tests.conftest import tiny_sweep_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PORT_FLAGS = ["--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--metrics-export-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on 127.0.0.1 in its own process group (so that stopping it leaves other clusters alone)."""
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    temp_dir = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray's socket paths must stay under 107 bytes
    ray_bin = str(Path(sys.executable).parent / "ray")
    command = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=4",
               f"--temp-dir={temp_dir}",  # its own session files: nothing else attaches to it
               "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               *[f"{flag}={port}" for flag, port in ports.items()]]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "w"),
                            stderr=subprocess.STDOUT)
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    deadline = time.time() + 120
    while subprocess.run([ray_bin, "job", "list", "--address", dashboard], env=env, capture_output=True).returncode:
        assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()[-3000:]
        time.sleep(2)
    yield dashboard, ports["--port"], env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    # `ray start` leaves its address for later `ray.init()` calls to attach to; the head is gone.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.is_file() and current.read_text().strip().endswith(f":{ports['--port']}"):
        current.unlink()


def test_job_submit_runs_the_sweep_on_the_head(ray_head, demo_data, pretrained_file, tmp_path):
    dashboard, _, env = ray_head
    tree = tiny_sweep_tree(demo_data, tmp_path, pretrained_file)
    tree["search"]["num_samples"] = 2
    tree["mlflow"]["experiment"] = "submitted"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tree))
    ray_bin = str(Path(sys.executable).parent / "ray")
    done = subprocess.run([ray_bin, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
                           "python", "-m", "sweep.run", "--config", str(config), "--verbose"],
                          env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in output, output[-4000:]
    # attached to the head (4 logical CPUs; a new local cluster here would count 2 cores), none started;
    # Ray says so on the console with --verbose (else in the sweep's log file)
    assert "Connecting to existing Ray cluster" in output and "'CPU': 4.0" in output
    assert "greedy" in output and "mlflow ui --backend-store-uri" in output

    client = MlflowClient(tree["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name("submitted")
    kinds = [r.data.tags.get(TAG_KIND) for r in client.search_runs([experiment.experiment_id])]
    assert sorted(kinds) == sorted([KIND_SWEEP, KIND_TRIAL, KIND_TRIAL, KIND_SOUP])
