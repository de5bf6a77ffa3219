"""The whole path: sweep (Tune + Ray Train DDP) -> manifest -> soup -> MLflow, on a local cluster."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from soup.inputs.manifest import FINISHED, read_manifest
from soup.inputs.records import (KIND_SOUP, KIND_SWEEP, KIND_TRIAL, TAG_BASE_CHECKSUM, TAG_MANIFEST, TAG_PARENT,
                                 TAG_STORAGE, TAG_TRIAL_ID)
from trainers.tracking import TAG_CHECKPOINT, TAG_KIND
from sweep.per_class import PER_CLASS_TABLE
from trainers import metrics as M
from trainers.checkpoint import read_meta
from trainers.config import TrainConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def runs_by_kind(client: MlflowClient, experiment_id: str) -> dict[str, list]:
    runs = client.search_runs([experiment_id], max_results=100)
    kinds: dict[str, list] = {}
    for run in runs:
        kinds.setdefault(run.data.tags.get(TAG_KIND), []).append(run)
    return kinds


def test_sweep_records_parent_trials_and_soup(finished_sweep, monkeypatch):
    cfg, outcome = finished_sweep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # load_table searches through the fluent API
    client = MlflowClient(cfg.mlflow.tracking_uri)
    kinds = runs_by_kind(client, outcome.experiment_id)
    (sweep_run,) = kinds[KIND_SWEEP]
    assert sweep_run.info.status == "FINISHED"
    assert sweep_run.data.tags[TAG_STORAGE] == cfg.storage_path
    assert sweep_run.data.params["search.num_samples"] == "4"
    assert sweep_run.data.metrics["trials_finished"] == 4 and sweep_run.data.metrics["trials_running"] == 0
    assert sweep_run.data.metrics["best/val/top1"] == max(r.data.metrics["val/top1"] for r in kinds[KIND_TRIAL])

    trials = kinds[KIND_TRIAL]
    assert len(trials) == 4
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags[TAG_PARENT] == sweep_run.info.run_id
        params = TrainConfig.from_params(run.data.params)
        history = client.get_metric_history(run.info.run_id, M.VAL_TOP1)
        assert [m.step for m in history] == list(range(1, params.optim.epochs + 1))
        meta = read_meta(run.data.tags[TAG_CHECKPOINT])
        assert TrainConfig.model_validate(meta["config"]) == params
        assert meta["trial_id"] == run.data.tags[TAG_TRIAL_ID]
        assert meta["base_checksum"] == sweep_run.data.tags[TAG_BASE_CHECKSUM]
        assert_per_class_table(client, outcome.experiment_id, run.info.run_id, meta)
    assert len({r.data.params["optim.lr"] for r in trials}) == 4  # the search really varied lr

    (soup_run,) = kinds[KIND_SOUP]
    assert soup_run.data.tags[TAG_PARENT] == sweep_run.info.run_id and soup_run.info.status == "FINISHED"
    metrics = soup_run.data.metrics
    for method in ("best", "uniform", "greedy", "ensemble", "zeroshot"):
        for split in ("heldout", "test", "shift/sketch"):
            assert 0 <= metrics[f"{method}/{split}/top1"] <= 1
    assert metrics["greedy/heldout/top1"] >= metrics["best/heldout/top1"]
    for baseline in ("baseline:zeroshot", "baseline:tip_adapter"):  # computed once, with the base
        assert 0 <= metrics[f"{baseline}/shift/sketch/top1"] <= 1
    assert metrics["baseline:zeroshot/test/top1"] == metrics["zeroshot/test/top1"]  # the base is zero-shot
    assert soup_run.data.params["greedy.members"]
    artifacts = {a.path for a in client.list_artifacts(soup_run.info.run_id)}
    assert {"comparison.json", "comparison.parquet", "greedy_trace.json", "left_out.json", "soups"} <= artifacts
    soups = {a.path for a in client.list_artifacts(soup_run.info.run_id, "soups/greedy")}
    assert soups == {"soups/greedy/model.safetensors", "soups/greedy/meta.json"}
    trace = json.loads(Path(client.download_artifacts(soup_run.info.run_id, "greedy_trace.json")).read_text())
    assert len(trace["data"]) == 4 and trace["data"][0][trace["columns"].index("accepted")] is True


def assert_per_class_table(client: MlflowClient, experiment_id: str, run_id: str, meta: dict) -> None:
    """The trial run's per-class table is its last checkpoint's report on val, logged once."""
    table = client.load_table(experiment_id, PER_CLASS_TABLE, run_ids=[run_id])
    report = meta["per_class"]["val"]
    assert list(table.columns) == [*report, M.EPOCH] and len(table) == len(report["class"]) > 1
    assert table["class"].tolist() == report["class"] and table["support"].tolist() == report["support"]
    assert table[M.EPOCH].tolist() == [meta["epoch"]] * len(table)
    for column in ("precision", "recall", "f1"):  # MLflow's JSON keeps 10 decimal places
        assert table[column].tolist() == pytest.approx(report[column], abs=1e-9)


TIMELINE = ["scheduled", "trial_start", "worker_start", "base_loaded", "data_ready", "train_start", "last_step",
            "report", "received", "fit_end", "trial_end"]  # a trial's phases in the order they happen (docs/benchmarks.md)


def test_trial_runs_record_their_timeline_in_order(finished_sweep):
    cfg, outcome = finished_sweep
    client = MlflowClient(cfg.mlflow.tracking_uri)
    for run in runs_by_kind(client, outcome.experiment_id)[KIND_TRIAL]:
        stamps = [run.data.metrics[f"timeline/{name}"] for name in TIMELINE]
        assert stamps == sorted(stamps) and stamps[-1] - stamps[0] < 600, dict(zip(TIMELINE, stamps))
        assert 0 < run.data.metrics["timeline/train_s"] < stamps[6] - stamps[5] + 1e-3
        meta = read_meta(run.data.tags[TAG_CHECKPOINT])
        assert not any(key.startswith("timeline/") for key in meta["metrics"])  # a checkpoint's meta stays stable
        reports = client.get_metric_history(run.info.run_id, "timeline/report")
        assert [m.step for m in reports] == [m.step for m in client.get_metric_history(run.info.run_id, M.VAL_TOP1)]


def test_trials_on_a_cluster_the_sweep_started_run_without_a_preemption_watcher(finished_sweep, actors_before_sweep):
    from ray.util.state import list_actors  # the session's cluster is still up: the test process started it

    def actors(class_name: str) -> list:  # those of the sweep (other tests share the cluster)
        found = list_actors(filters=[("class_name", "=", class_name)], limit=10_000, raise_on_missing_output=False)
        return [actor for actor in found if actor.actor_id not in actors_before_sweep]

    assert actors("RayTrainWorker"), "no Train worker listed: the check below would prove nothing"
    assert actors("PreemptionWatcher") == []  # sweep.trial.LOCAL_CLUSTER_ENV (a cluster of this machine only)


def test_greedy_soup_beats_or_ties_every_ingredient_on_heldout(finished_sweep):
    _, outcome = finished_sweep
    table = outcome.soup.outcome.table
    greedy = next(r["top1"] for r in table if r["method"] == "greedy" and r["set"] == "heldout")
    trials = [r["top1"] for r in table if r["method"].startswith("trial:") and r["set"] == "heldout"]
    assert len(trials) == 4 and greedy >= max(trials)


def test_manifest_lists_every_trial(finished_sweep):
    cfg, outcome = finished_sweep
    client = MlflowClient(cfg.mlflow.tracking_uri)
    sweep_run = runs_by_kind(client, outcome.experiment_id)[KIND_SWEEP][0]
    rows = read_manifest(sweep_run.data.tags[TAG_MANIFEST])
    assert len(rows) == 4 and all(r.status == FINISHED and Path(r.checkpoint).is_dir() for r in rows)
    assert {r.mlflow_run_id for r in rows} == {r.info.run_id for r in runs_by_kind(client, outcome.experiment_id)[KIND_TRIAL]}


def test_soup_greedy_from_another_process(finished_sweep):
    cfg, outcome = finished_sweep
    client = MlflowClient(cfg.mlflow.tracking_uri)
    before = len(runs_by_kind(client, outcome.experiment_id)[KIND_SOUP])
    done = subprocess.run([sys.executable, "-m", "soup.greedy", "--experiment", outcome.experiment,
                           "--tracking-uri", cfg.mlflow.tracking_uri, "--methods", "greedy,uniform"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr
    assert "greedy" in done.stdout and "uniform" in done.stdout
    assert "Instantiating model architecture" not in done.stdout + done.stderr  # open_clip's chatter (--verbose)
    soups = runs_by_kind(client, outcome.experiment_id)[KIND_SOUP]
    assert len(soups) == before + 1
    newest = max(soups, key=lambda r: r.info.start_time)
    assert set(newest.data.params["methods"].split(",")) == {"greedy", "uniform"}
    assert "ensemble/test/top1" not in newest.data.metrics


def test_same_experiment_twice_is_refused(finished_sweep):
    from sweep.driver import run_sweep
    from trainers.errors import UserError

    cfg, _ = finished_sweep
    with pytest.raises(UserError, match="already holds a sweep"):
        run_sweep(cfg)
