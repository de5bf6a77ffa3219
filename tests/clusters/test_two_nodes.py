"""A two-node Ray cluster on this machine: a sweep's trials train on both nodes; clusters/scale.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_TRIAL
from trainers.tracking import TAG_KIND
from tests.conftest import tiny_sweep_tree
from tests.sweep.test_job_submit import PORT_FLAGS, free_ports

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
NODE_PORT_FLAGS = [f for f in PORT_FLAGS if f not in ("--port", "--dashboard-port", "--ray-client-server-port")]
NODE_CPUS = 2


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start --block` in its own process group, so that stopping it leaves other clusters alone."""
    return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={NODE_CPUS}",
                             *command], env=env, start_new_session=True, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the node's processes; `ray start` itself then lingers ~30 s trying to drain the node
    through a GCS that is gone, so it gets SIGKILL after a short grace period."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def alive_nodes(dashboard: str, env: dict) -> list[str]:
    listed = subprocess.run([RAY, "list", "nodes", "--address", dashboard, "--format", "json"], env=env,
                            capture_output=True, text=True)
    try:
        return [n["node_id"] for n in json.loads(listed.stdout) if n["state"] == "ALIVE"]
    except ValueError:  # the dashboard is not up yet (or answered with a warning, not JSON)
        return []


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node (its own resources), both on 127.0.0.1 with free ports."""
    logs = tmp_path_factory.mktemp("two-nodes")
    ports = free_ports(len(PORT_FLAGS) + len(NODE_PORT_FLAGS))  # one call: no port handed out twice
    head_ports = dict(zip(PORT_FLAGS, ports))
    node_ports = dict(zip(NODE_PORT_FLAGS, ports[len(PORT_FLAGS):]))
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    # Its own temp dir (short: Ray's socket paths must stay under 108 bytes), so that the address
    # `ray start` leaves behind is not picked up by `ray.init()` of other processes on this machine.
    temp_dir = tempfile.mkdtemp(prefix="ray2n-", dir="/tmp")
    head = start(["--head", "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir}",
                  *[f"{flag}={port}" for flag, port in head_ports.items()]], env, logs / "head.log")
    gcs, dashboard = f"127.0.0.1:{head_ports['--port']}", f"http://127.0.0.1:{head_ports['--dashboard-port']}"
    node = None
    try:
        deadline = time.time() + 150
        while not alive_nodes(dashboard, env):
            assert head.poll() is None and time.time() < deadline, (logs / "head.log").read_text()[-3000:]
            time.sleep(2)
        node = start([f"--address={gcs}", '--resources={"node_b": 2}',
                      *[f"{flag}={port}" for flag, port in node_ports.items()]], env, logs / "node.log")
        while len(alive_nodes(dashboard, env)) < 2:
            assert node.poll() is None and time.time() < deadline, (logs / "node.log").read_text()[-3000:]
            time.sleep(2)
        yield {"gcs": gcs, "dashboard": dashboard, "env": env, "nodes": alive_nodes(dashboard, env)}
    finally:
        for process in (node, head):  # the second node first: it drains through the head's GCS
            if process is not None:
                stop(process)
        # `ray start` leaves its address for later `ray.init()` calls to attach to; the head is gone.
        for current in (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster",
                        Path(temp_dir) / "ray_current_cluster"):
            if current.is_file() and current.read_text().strip().endswith(f":{head_ports['--port']}"):
                current.unlink()
        shutil.rmtree(temp_dir, ignore_errors=True)


def train_workers(dashboard: str, env: dict, class_name: str = "RayTrainWorker") -> list[dict]:
    listed = subprocess.run([RAY, "list", "actors", "--address", dashboard, "--detail", "--format", "json",
                             "--filter", f"class_name={class_name}", "--limit", "1000"],
                            env=env, capture_output=True, text=True, check=True)
    return json.loads(listed.stdout)


def test_a_sweeps_trials_train_on_both_nodes(two_nodes, demo_data, pretrained_file, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path, pretrained_file)
    tree["search"]["num_samples"] = 2
    tree["search"]["space"]["optim.epochs"] = {"choice": [1]}
    # Each DDP rank needs 1.5 of a node's 2 CPUs, so a trial's two ranks never share a node: every
    # trial trains across both nodes, whichever node Ray picks first (and trials run one at a time).
    tree["resources"] = {"workers": 2, "cpus_per_worker": 1.5, "driver_cpus": 0.5}
    tree["mlflow"]["experiment"] = "two-nodes"
    tree["soup"] = {"methods": ["best"]}  # the soup stage is tested elsewhere; here it only has to end the sweep
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tree))
    done = subprocess.run([sys.executable, "-m", "sweep.run", "--config", str(config)], cwd=ROOT,
                          env={**two_nodes["env"], "RAY_ADDRESS": two_nodes["gcs"]},
                          capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    by_group = defaultdict(set)  # a trial's worker group -> the nodes its ranks ran on
    for worker in train_workers(two_nodes["dashboard"], two_nodes["env"]):
        by_group[worker["placement_group_id"]].add(worker["node_id"])
    assert len(by_group) == 2, by_group  # one worker group per trial (no restarts, nothing else attached)
    assert all(nodes == set(two_nodes["nodes"]) for nodes in by_group.values()), (by_group, two_nodes["nodes"])
    # a cluster the sweep attached to may have spot nodes: Train's preemption watcher stays on (one per trial)
    assert len(train_workers(two_nodes["dashboard"], two_nodes["env"], "PreemptionWatcher")) == 2

    client = MlflowClient(tree["mlflow"]["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("two-nodes").experiment_id])
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TRIAL]
    assert [r.info.status for r in trials] == ["FINISHED", "FINISHED"]


def test_scale_waits_for_what_the_request_needs(two_nodes):
    def scale(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "clusters" / "scale.py"), *args],
                              env={**two_nodes["env"], "RAY_ADDRESS": two_nodes["gcs"]},
                              capture_output=True, text=True, timeout=120)

    fits = scale("--cluster", "local", "--trials", "2")  # 2 x 2 x 0.25 CPUs: already there
    assert fits.returncode == 0 and "ready for 2 local trial(s)" in fits.stdout, fits.stdout + fits.stderr
    # no autoscaler on this cluster: GPUs never come, and the wait ends with an explanation
    short = scale("--cluster", "aws-1gpu", "--trials", "1", "--timeout", "3")
    assert short.returncode == 2 and "did not bring {'CPU': 6.0, 'GPU': 1.0}" in short.stderr, short.stderr
    released = scale("--release")
    assert released.returncode == 0 and "released" in released.stdout, released.stdout + released.stderr
