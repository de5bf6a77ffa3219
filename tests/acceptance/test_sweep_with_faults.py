"""Faults while a submitted sweep trains: the MLflow server dies (and comes back later) and a Ray Train
worker is killed. The sweep must finish, the killed trial retried from its checkpoint, and MLflow must
end up with complete runs: every epoch of every trial logged once, every run closed.

One small sweep (2 trials of the tiny model) carries both faults, to keep CI short. It runs after the
journey module (file order), on the same Ray head and MLflow server, and leaves the server running.
"""
from __future__ import annotations

import glob
import json
import os
import re
import signal
from pathlib import Path

import pytest
import yaml

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL
from trainers.tracking import TAG_KIND
from sweep.tracking import TAG_STATUS
from tests.acceptance.services import TERMINAL, metrics, params, rest, tags, wait_for_job, wait_until
from tests.conftest import tiny_sweep_tree

pytestmark = pytest.mark.slow
EXPERIMENT = "acceptance-faults"
EPOCHS = 8


def epochs_kept(storage: Path) -> dict[str, int]:
    """Per Train run, the latest epoch among the checkpoints Ray Train keeps (their meta.json says it)."""
    kept = {}
    for path in glob.glob(f"{storage}/{EXPERIMENT}-train-*/checkpoint_*/meta.json"):
        try:
            epoch = json.loads(Path(path).read_text())["epoch"]
        except (OSError, ValueError, KeyError):  # being written or already replaced by the next one
            continue
        run = Path(path).parent.parent.name
        kept[run] = max(kept.get(run, 0), epoch)
    return kept


def runs_of(server: str, kind: str) -> list[dict]:
    experiment = rest(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    return rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100,
                                        "filter": f"tags.`{TAG_KIND}` = '{kind}'"}).get("runs", [])


def test_sweep_survives_an_mlflow_outage_and_a_killed_worker(services, demo_data, pretrained_file, tmp_path,
                                                             output_dir):
    tree = tiny_sweep_tree(demo_data, tmp_path, pretrained_file,
                           search={"num_samples": 2, "seed": 1, "space": {"seed": {"randint": [0, 1000]}}})
    tree["optim"]["epochs"] = EPOCHS
    tree["resources"]["max_failures"] = 1
    tree["mlflow"] = {"tracking_uri": services.mlflow.url, "experiment": EXPERIMENT}
    tree["soup"] = {"methods": ["best", "uniform", "greedy"]}
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(tree))
    storage, server, head = tmp_path / "storage", services.mlflow, services.ray
    # MLflow's client retries a request for ~4 minutes by default before it gives up (and our queue
    # warns, then retries on its own); two retries make the outage show within seconds in the job's log.
    job_id = head.submit(config, env_vars={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"})
    jobs = head.jobs()
    try:
        inject_faults(jobs, job_id, head, server, storage)
        status = wait_for_job(jobs, job_id)
    finally:  # the job's output, for whoever reads a failure
        (output_dir / "faults-job.log").write_text(jobs.get_job_logs(job_id))
    logs = jobs.get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-6000:]
    logs += (storage / f"{EXPERIMENT}-soupsweep" / "console.log").read_text()  # Ray's output, and our log records
    assert re.search(r"MLflow at \S+ is not answering", logs) and re.search(r"MLflow at \S+ answers again", logs)
    assert "[FailurePolicy] RETRY" in logs  # Ray Train restarted the killed worker's group

    (sweep,) = runs_of(server.url, KIND_SWEEP)
    assert sweep["info"]["status"] == "FINISHED" and metrics(sweep)["trials_finished"] == 2
    trials = runs_of(server.url, KIND_TRIAL)
    assert len(trials) == 2
    for trial in trials:
        assert trial["info"]["status"] == "FINISHED" and tags(trial)[TAG_STATUS] == "finished"
        history = rest(server.url, "metrics/get-history", run_id=trial["info"]["run_id"], metric_key="val/top1")
        # every epoch once: nothing reported during the outage was lost, and the killed trial resumed
        # from its checkpoint instead of training again from the start
        assert sorted(m["step"] for m in history["metrics"]) == list(range(1, EPOCHS + 1)), history
    (soup,) = runs_of(server.url, KIND_SOUP)
    assert soup["info"]["status"] == "FINISHED" and params(soup)["ingredients"] == "2"


def inject_faults(jobs, job_id: str, head, server, storage: Path) -> None:
    """As soon as trials train, the MLflow server dies; once a trial kept its first checkpoint, one of its
    Train workers is killed; training must go on for two more epochs before the server comes back."""
    workers = []

    def training(with_checkpoint: bool) -> bool:
        status = str(jobs.get_job_status(job_id).value)
        assert status not in TERMINAL, f"job ended early ({status}):\n{jobs.get_job_logs(job_id)[-4000:]}"
        workers[:] = head.train_workers()
        return bool(workers) and (not with_checkpoint or bool(epochs_kept(storage)))

    wait_until(lambda: training(with_checkpoint=False), "trials to train", 300, interval_s=0.5)
    server.kill()
    before = epochs_kept(storage)
    wait_until(lambda: training(with_checkpoint=True), "a first checkpoint", 300, interval_s=0.5)
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: any(epoch >= before.get(run, 0) + 2 for run, epoch in epochs_kept(storage).items()),
               "training to go on while MLflow is down", 300)
    assert server.down()
    server.start()  # back, with the same port and data
