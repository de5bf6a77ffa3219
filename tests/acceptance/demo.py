"""The acceptance suite's demo sweep: the embedded demo config, made smaller for CI (3 trials of 2
epochs), submitted once to the Ray head with `ray job submit` (the `demo` fixture, in conftest.py),
and what the tests read of it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from trainers.tracking import TAG_KIND
from sweep.demo import DEMO_CONFIG
from tests.acceptance.services import rest, wait_for_job
from tests.conftest import data_section

EXPERIMENT = "acceptance-demo"
TRIALS, EPOCHS = 3, 2
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


@dataclass
class Demo:
    server: str
    storage: Path
    job_status: str
    job_logs: str


def run_demo(services, demo_data, pretrained_file, tmp: Path) -> Demo:
    """The embedded demo config (sweep/configs/demo.yaml) as `python -m sweep.run` fills it in, with the
    session's generated data and stand-in weights, pointed at the MLflow server, written to a YAML file,
    submitted; returns when the job has ended."""
    tree = yaml.safe_load(DEMO_CONFIG.read_text())
    tree["model"]["pretrained"] = pretrained_file
    tree["data"] = data_section(demo_data)
    tree["search"]["num_samples"] = TRIALS
    tree["search"]["space"]["optim.epochs"] = {"choice": [EPOCHS]}
    tree["storage_path"] = str(tmp / "storage")
    tree["mlflow"] = {"tracking_uri": services.mlflow.url, "experiment": EXPERIMENT}
    config = tmp / "demo.yaml"
    config.write_text(yaml.safe_dump(tree))
    job_id = services.ray.submit(config)
    jobs = services.ray.jobs()
    status = wait_for_job(jobs, job_id)
    return Demo(services.mlflow.url, tmp / "storage", status, jobs.get_job_logs(job_id))


def runs_of(server: str, kind: str) -> list[dict]:
    experiment = rest(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    found = rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000,
                                         "filter": f"tags.`{TAG_KIND}` = '{kind}'"})
    return found.get("runs", [])
