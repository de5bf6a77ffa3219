"""The acceptance suite's services: one `mlflow server` and one `ray start --head` for the whole package
(started side by side, stopped after its last test), as a user would run them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.demo import Demo, run_demo
from tests.acceptance.services import ROOT, MlflowServer, RayHead


@dataclass
class Services:
    mlflow: MlflowServer
    ray: RayHead
    workdir: Path


@pytest.fixture(scope="package")
def services(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("services")
    server, head = MlflowServer(workdir), RayHead(workdir)
    try:
        server.launch()
        head.launch()
        server.wait_ready()
        head.wait_ready()
        yield Services(server, head, workdir)
    finally:
        head.stop()
        server.stop()


@pytest.fixture(scope="package")
def output_dir() -> Path:
    """Where the suite leaves files for people to look at (screenshots): $SOUPSWEEP_TEST_OUTPUT or
    test-output/ in the repository (CI can keep it as an artifact)."""
    path = Path(os.environ.get("SOUPSWEEP_TEST_OUTPUT", ROOT / "test-output")) / "acceptance"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def demo(services, demo_data, pretrained_file, tmp_path_factory) -> Demo:
    """One demo sweep for the package's tests that read it (test_mlflow_ui, test_sweep_journey)."""
    return run_demo(services, demo_data, pretrained_file, tmp_path_factory.mktemp("demo"))
