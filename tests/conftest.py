"""Session fixtures: generated data, stand-in pretrained weights, a local Ray cluster, one finished sweep.

Everything is real: Parquet files, open_clip models (tiny), Ray (local), MLflow (sqlite).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trainers.data.synthetic import write_demo_data
from trainers.demo_pretrain import pretrain_demo_clip

SMALL_SPLITS = {"train": 256, "val": 64, "heldout": 96, "test": 96, "sketch": 96}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, str]:
    """Generated splits (train/val/heldout/test photo, sketch shift) as Parquet: name -> path."""
    return write_demo_data(tmp_path_factory.mktemp("data"), sizes=SMALL_SPLITS)


@pytest.fixture(scope="session")
def pretrained_file(tmp_path_factory) -> str:
    """Stand-in pretrained weights of the tiny model, written by the test session itself."""
    return str(pretrain_demo_clip(tmp_path_factory.mktemp("weights") / "tiny.safetensors", epochs=15))


@pytest.fixture
def hf_offline(monkeypatch, tmp_path) -> None:
    """No Hugging Face downloads and an empty cache, as on a machine without network. The variable is read
    when huggingface_hub is imported, hence the constant too (else every call waits for its timeouts)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


class RunsAShell:
    """Unpickling this would run a shell command (touch `marker`): what a malicious weights file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def data_section(paths: dict[str, str]) -> dict:
    return {"train": paths["train"], "val": paths["val"], "heldout": paths["heldout"], "test": paths["test"],
            "shift": {"sketch": paths["sketch"]}}


def tiny_sweep_tree(paths: dict[str, str], tmp: Path, pretrained: str | None = None, **overrides) -> dict:
    """A sweep config (as YAML would give it) small enough for a 2-core machine: 4 trials, 2 workers each."""
    tree = {
        "model": {"name": "soupsweep-tiny-vit", "pretrained": pretrained},
        "data": data_section(paths),
        "optim": {"lr": 5e-4, "epochs": 2, "batch_size": 32, "warmup_steps": 2},
        "search": {"num_samples": 4, "seed": 7, "space": {
            "optim.lr": {"loguniform": [2e-4, 1e-3]},
            "optim.label_smoothing": {"uniform": [0.0, 0.1]},
            "aug.mixup_alpha": {"choice": [0.0, 0.2]},
            "optim.epochs": {"randint": [2, 3]},
            "seed": {"randint": [0, 1000]},
        }},
        "resources": {"workers": 2, "cpus_per_worker": 0.5, "driver_cpus": 0.5},
        "storage_path": str(tmp / "storage"),
        "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "tiny-sweep"},
    }
    tree.update(overrides)
    return tree


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session, with 4 logical CPUs so two 2-worker trials fit."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address="local", num_cpus=4)  # "local": never attach to another cluster on this machine
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def actors_before_sweep(ray_cluster) -> set[str]:
    """Ids of the actors other tests made in the session's cluster before `finished_sweep` ran."""
    from ray.util.state import list_actors

    return {actor.actor_id for actor in list_actors(limit=10_000, raise_on_missing_output=False)}


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, demo_data, pretrained_file, ray_cluster, actors_before_sweep):
    """One whole sweep -> soup -> MLflow run, shared by the end-to-end tests."""
    from sweep.config import SweepConfig
    from sweep.driver import run_sweep
    from trainers.config import validate

    tmp = tmp_path_factory.mktemp("sweep")
    cfg = validate(SweepConfig, tiny_sweep_tree(demo_data, tmp, pretrained_file))
    return cfg, run_sweep(cfg)


@pytest.fixture
def s3_server(tmp_path):
    """An S3-compatible server (moto) on 127.0.0.1 with an empty bucket, and the env that points at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(tmp_path / "moto.log", "w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/soups", method="PUT"), timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    server.terminate()
    server.wait(timeout=30)
