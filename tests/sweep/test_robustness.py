"""Sweeps that survive: seeded search, failures, divergence, time budgets, resume, S3 storage."""
from __future__ import annotations

import glob
import os
import re
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from soup.inputs.manifest import DIVERGED, FINISHED, STOPPED, read_manifest
from soup.inputs.records import KIND_SOUP, TAG_MANIFEST, find_experiment, require_sweep_run
from trainers.tracking import TAG_CHECKPOINT, TAG_KIND
from sweep.config import SweepConfig
from sweep.driver import run_sweep
from sweep.space import param_space, search_algorithm
from sweep.tracking import TAG_STATUS
from tests.conftest import tiny_sweep_tree
from tests.sweep.test_e2e import assert_per_class_table
from tests.sweep.storage import unwritable
from tests.sweep.sweeps import ROOT, epochs_logged, finish, start_sweep, trial_runs, wait_for, write_config
from trainers.checkpoint import read_meta
from trainers.config import validate
from trainers.errors import UserError

pytestmark = pytest.mark.slow
FAULT_INJECTION = Path(__file__).parent / "fault_injection"  # a sitecustomize.py, see its docstring
SPACE = {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "aug.mixup_alpha": {"off_or_uniform": [0.0, 0.5]},
         "optim.epochs": {"randint": [2, 9]}, "method.name": {"choice": ["ft", "carft"]}}


def sweep_config(demo_data, tmp_path, **search) -> SweepConfig:
    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["search"] = {"num_samples": 1, "space": {}, **search}
    return validate(SweepConfig, tree)


def test_optuna_with_a_fixed_seed_proposes_the_same_configs(demo_data, tmp_path):
    cfg = sweep_config(demo_data, tmp_path, algorithm="optuna", seed=3, space=SPACE)

    def proposals(seed: int) -> list[dict]:
        searcher = OptunaSearch(metric="val/top1", mode="max", seed=seed)
        searcher.set_search_properties("val/top1", "max", param_space(cfg.search))
        return [searcher.suggest(f"t{i}") for i in range(6)]

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_random_and_grid_search_are_reproducible(ray_cluster, demo_data, tmp_path):
    def configs(algorithm: str, seed: int, space: dict) -> list[dict]:
        cfg = sweep_config(demo_data, tmp_path, algorithm=algorithm, seed=seed, space=space, num_samples=4)
        tuner = tune.Tuner(lambda config: {"val/top1": 0.5}, param_space=param_space(cfg.search),
                           tune_config=tune.TuneConfig(num_samples=4, search_alg=search_algorithm(cfg.search, 2)),
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
        return sorted((r.config for r in tuner.fit()), key=str)

    assert configs("random", 5, SPACE) == configs("random", 5, SPACE) != configs("random", 6, SPACE)
    grid = {"optim.lr": {"choice": [1e-4, 1e-3]}, "seed": {"choice": [1, 2]}}
    points = configs("grid", 0, grid)
    assert len(points) == 16 and {(p["optim.lr"], p["seed"]) for p in points} == {
        (1e-4, 1), (1e-4, 2), (1e-3, 1), (1e-3, 2)}
    with pytest.raises(UserError, match="grid needs a choice domain for every key; not for \\['optim.lr'\\]"):
        validate(SweepConfig, {"search": {"algorithm": "grid", "space": {"optim.lr": {"uniform": [0.1, 0.2]}}}})


def test_diverging_trial_is_marked_and_left_out_of_the_soup(ray_cluster, demo_data, tmp_path):
    cfg = sweep_config(demo_data, tmp_path, algorithm="grid",
                       space={"optim.lr": {"choice": [5e-4, 1e6]}, "optim.grad_clip": {"choice": [None]}})
    outcome = run_sweep(cfg)
    by_lr = {r.config["optim"]["lr"]: r for r in outcome.ingredients}
    assert by_lr[5e-4].status == FINISHED
    assert by_lr[1e6].status == DIVERGED and "non-finite" in by_lr[1e6].reason
    assert outcome.soup.outcome.skipped == {by_lr[1e6].trial_id: f"status diverged: {by_lr[1e6].reason}"}
    runs = {r.info.run_id: r for r in trial_runs(cfg.mlflow.tracking_uri, outcome.experiment)}
    diverged = runs[by_lr[1e6].mlflow_run_id]
    assert diverged.data.tags[TAG_STATUS] == DIVERGED and diverged.info.status == "FAILED"


def test_time_budget_stops_trials_that_stay_ingredients(ray_cluster, demo_data, tmp_path):
    cfg = sweep_config(demo_data, tmp_path, time_budget_s=120)  # room for a first epoch on a loaded machine
    cfg.optim.epochs = 400
    outcome = run_sweep(cfg)
    (trial,) = outcome.ingredients
    assert trial.status == STOPPED and "stopped early" in trial.reason
    assert outcome.soup.outcome.skipped == {}
    assert [r.members for r in outcome.soup.outcome.results if r.name == "greedy"] == [[trial.trial_id]]
    run = MlflowClient(cfg.mlflow.tracking_uri).get_run(trial.mlflow_run_id)
    assert run.data.tags[TAG_CHECKPOINT] == trial.checkpoint  # the checkpoint kept, even if saved after Tune's last result


def test_unwritable_storage_is_reported_before_any_trial(ray_cluster, demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the console log falls back to the working directory
    cfg = sweep_config(demo_data, tmp_path)
    cfg.storage_path = str(tmp_path / "storage")  # a file in its place: test_user_journey
    (tmp_path / "storage").mkdir()
    with unwritable(tmp_path / "storage"), pytest.raises(UserError, match="storage is a folder you cannot write"):
        run_sweep(cfg)  # found on the driver before Ray starts; a node that cannot write: check_storage_writable
    assert not trial_runs(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)


def train_workers() -> list[int]:
    """PIDs of Ray Train worker processes on this machine (Ray titles them ray::RayTrainWorker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_worker_killed_mid_trial_is_survived(demo_data, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path, search={"num_samples": 1, "space": {}})
    tree["optim"]["epochs"] = 8
    tree["resources"]["max_failures"] = 1
    log = tmp_path / "log.txt"
    sweep = start_sweep(["--config", str(write_config(tmp_path, tree))], log)
    checkpoints = f"{tmp_path}/storage/tiny-sweep-train-*/checkpoint_*"
    wait_for(lambda: glob.glob(checkpoints) and train_workers(), "a first checkpoint", sweep, log)
    os.kill(train_workers()[0], signal.SIGKILL)
    finish(sweep, log)
    (run,) = trial_runs(tree["mlflow"]["tracking_uri"], "tiny-sweep")
    assert run.data.tags[TAG_STATUS] == FINISHED
    epochs = epochs_logged(tree["mlflow"]["tracking_uri"], run.info.run_id)
    assert epochs[-1] == 8 and len(epochs) == len(set(epochs))  # resumed from its checkpoint, not from scratch


def test_trial_that_raises_once_is_retried_from_its_checkpoint(demo_data, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path, search={"num_samples": 1, "space": {}})
    tree["optim"]["epochs"] = 4
    tree["resources"]["max_failures"] = 1
    markers, log = tmp_path / "raised", tmp_path / "log.txt"
    env = {"PYTHONPATH": f"{FAULT_INJECTION}{os.pathsep}{ROOT}", "SOUPSWEEP_RAISE_ONCE": f"3:{markers}"}
    # --verbose: the worker's error text is on the console (else in the sweep's log file)
    output = finish(start_sweep(["--config", str(write_config(tmp_path, tree)), "--verbose"], log, env=env), log)
    assert "injected fault at epoch 3" in output and any(markers.iterdir())
    (run,) = trial_runs(tree["mlflow"]["tracking_uri"], "tiny-sweep")
    assert run.data.tags[TAG_STATUS] == FINISHED
    # Epochs 1 and 2 were not trained again: the retry started from the epoch-2 checkpoint.
    assert epochs_logged(tree["mlflow"]["tracking_uri"], run.info.run_id) == [1, 2, 3, 4]


def test_asha_stops_a_poor_trial_that_stays_an_ingredient(ray_cluster, demo_data, tmp_path, monkeypatch):
    # Trials run one at a time in grid order: the good learning rate sets the bar at epoch 1, the
    # tiny one cannot reach it and ASHA stops it there.
    cfg = sweep_config(demo_data, tmp_path, algorithm="grid", max_concurrent_trials=1,
                       asha={"grace_period": 1, "reduction_factor": 2},
                       space={"optim.lr": {"choice": [1e-3, 1e-8]}})
    cfg.optim.epochs = 3
    outcome = run_sweep(cfg)
    by_lr = {r.config["optim"]["lr"]: r for r in outcome.ingredients}
    assert by_lr[1e-3].status == FINISHED
    # ASHA decides at epoch 1; on a loaded machine the trial may finish epoch 2 before Tune stops it.
    stopped = by_lr[1e-8]
    epochs = epochs_logged(cfg.mlflow.tracking_uri, stopped.mlflow_run_id)
    assert epochs in ([1], [1, 2]) and stopped.status == STOPPED
    assert stopped.reason == f"stopped early at epoch {epochs[-1]} of 3"
    assert stopped.checkpoint and outcome.soup.outcome.skipped == {}
    runs = {r.info.run_id: r for r in trial_runs(cfg.mlflow.tracking_uri, outcome.experiment)}
    assert runs[stopped.mlflow_run_id].data.tags[TAG_STATUS] == STOPPED
    # a stopped trial is an ingredient, with its per-class report like a finished one
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # load_table searches the global store
    assert_per_class_table(MlflowClient(cfg.mlflow.tracking_uri), runs[stopped.mlflow_run_id].info.experiment_id,
                           stopped.mlflow_run_id, read_meta(stopped.checkpoint))


def test_killed_driver_resumes_without_training_a_trial_twice(demo_data, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["search"].update(num_samples=3, max_concurrent_trials=1, space={"seed": {"randint": [0, 100]}})
    tree["optim"]["epochs"] = 6
    uri, log = tree["mlflow"]["tracking_uri"], tmp_path / "first.txt"
    sweep = start_sweep(["--config", str(write_config(tmp_path, tree))], log)

    def one_finished_one_started() -> bool:
        runs = trial_runs(uri, "tiny-sweep")
        return len(runs) >= 2 and any(r.data.tags.get(TAG_STATUS) == FINISHED for r in runs)

    wait_for(one_finished_one_started, "one trial finished and the next started", sweep, log)
    # Killed while a checkpoint is in flight: uploaded beside the one Ray Train keeps (num_to_keep=1),
    # not yet registered, or registered but neither logged in MLflow nor the old one deleted.
    wait_for(lambda: checkpoints_in_flight(tmp_path / "storage"), "a checkpoint in flight", sweep, log,
             interval_s=0.02)
    os.killpg(sweep.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    sweep.wait()
    before = {r.info.run_id: epochs_logged(uri, r.info.run_id) for r in trial_runs(uri, "tiny-sweep")}

    resumed = start_sweep(["--resume", "tiny-sweep", "--tracking-uri", uri], tmp_path / "resume.txt")
    output = finish(resumed, tmp_path / "resume.txt")
    assert "greedy" in output
    runs = trial_runs(uri, "tiny-sweep")
    assert len(runs) == 3 and all(r.data.tags[TAG_STATUS] == FINISHED for r in runs)
    for run in runs:  # every epoch once, the one in flight when the driver died included
        assert epochs_logged(uri, run.info.run_id) == list(range(1, 7)), (run.info.run_id, before)
    logged = (tmp_path / "storage" / "tiny-sweep-soupsweep" / "console.log").read_text()  # Ray's and our logs
    assert re.search(r"removed \d+ checkpoints that Ray Train does not keep", logged) or any(
        "logged epoch" in line and "from its checkpoint" in line for line in logged.splitlines())
    for run_folder in glob.glob(f"{tmp_path}/storage/tiny-sweep-train-*"):  # only what num_to_keep keeps
        assert len(glob.glob(f"{run_folder}/checkpoint_*/")) == 1, os.listdir(run_folder)
    client = MlflowClient(uri)
    sweep_run = require_sweep_run(client, find_experiment(client, "tiny-sweep"))
    assert sweep_run.info.status == "FINISHED"
    assert len(read_manifest(sweep_run.data.tags[TAG_MANIFEST])) == 3



def test_a_driver_killed_in_its_soup_stage_resumes_to_one_finished_soup_run(demo_data, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["search"].update(num_samples=1, space={})  # one ingredient is enough to make and export a soup
    tree["soup"] = {"methods": ["greedy", "uniform"], "export_open_clip": str(tmp_path / "exported")}
    uri, log = tree["mlflow"]["tracking_uri"], tmp_path / "first.txt"
    sweep = start_sweep(["--config", str(write_config(tmp_path, tree))], log)
    wait_for(lambda: soup_runs(uri), "the soup stage's run", sweep, log, interval_s=0.1)
    os.killpg(sweep.pid, signal.SIGKILL)  # the driver (which runs the soup stage) and its local Ray cluster
    sweep.wait()

    resumed = start_sweep(["--resume", "tiny-sweep", "--tracking-uri", uri], tmp_path / "resume.txt")
    assert "greedy" in finish(resumed, tmp_path / "resume.txt")
    killed, finished = soup_runs(uri)  # the UI shows one soup run: the killed stage's is not left RUNNING
    assert (killed.info.status, finished.info.status) == ("KILLED", "FINISHED")
    assert (tmp_path / "exported" / "open_clip_model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")]
    client = MlflowClient(uri)
    assert require_sweep_run(client, find_experiment(client, "tiny-sweep")).info.status == "FINISHED"


def soup_runs(uri: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name("tiny-sweep")
    return [] if found is None else client.search_runs([found.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_SOUP}'",
                                                       order_by=["start_time"])


def checkpoints_in_flight(storage: Path) -> bool:
    """A Train run folder holds two checkpoint folders: a new one beside the one it keeps."""
    return any(len(glob.glob(f"{run}/checkpoint_*/")) > 1 for run in glob.glob(f"{storage}/tiny-sweep-train-*"))


def test_s3_storage_end_to_end(s3_server, demo_data, tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["search"]["num_samples"] = 2
    tree["storage_path"] = "s3://soups/sweeps"
    log = tmp_path / "log.txt"
    output = finish(start_sweep(["--config", str(write_config(tmp_path, tree))], log, env=s3_server), log)
    assert "greedy" in output
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tree["mlflow"]["tracking_uri"])
    sweep_run = require_sweep_run(client, find_experiment(client, "tiny-sweep"))
    manifest = sweep_run.data.tags[TAG_MANIFEST]
    assert manifest == "s3://soups/sweeps/tiny-sweep-soupsweep/ingredients.parquet"
    rows = read_manifest(manifest)
    assert len(rows) == 2 and all(r.status == FINISHED and r.checkpoint.startswith("s3://soups/sweeps/") for r in rows)
    fs, _ = pafs.FileSystem.from_uri(manifest)
    stored = {info.path for info in fs.get_file_info(pafs.FileSelector("soups/sweeps", recursive=True))}
    assert any(p.endswith("base/model.safetensors") for p in stored)
    assert sum(p.endswith("/model.safetensors") for p in stored) >= 3  # base + a checkpoint per trial
    assert not any(Path(tmp_path / "storage").glob("*"))  # nothing went to local disk instead
    soups = client.search_runs([sweep_run.info.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_SOUP}'")
    assert len(soups) == 1 and soups[0].data.metrics["greedy/heldout/top1"] > 0
