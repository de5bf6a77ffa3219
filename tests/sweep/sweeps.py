"""Helpers for tests that run whole sweeps as a user would: `python -m sweep.run` in a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml
from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_TRIAL
from trainers.tracking import TAG_KIND

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def start_sweep(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m sweep.run ARGS` in its own process group (it starts its own local Ray cluster)."""
    # RAY_ADDRESS=local: a cluster of its own, never one that another test started with `ray start`
    full_env = {**os.environ, "RAY_ADDRESS": "local", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "sweep.run", *args], cwd=ROOT, env=full_env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert process.returncode == 0, output[-6000:]
    return output


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen, log: Path,
             timeout: float = 300, interval_s: float = 1.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"sweep ended while waiting for {what}:\n{log.read_text()[-4000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)


def trial_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_TRIAL}'")


def epochs_logged(tracking_uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, "val/top1"))
