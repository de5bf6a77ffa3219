"""The soup stage of a sweep recorded in MLflow (no Ray needed): options from the sweep config's `soup`
section reach it, and the soup run holds lineage back to the trial runs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from soup import greedy
from soup.inputs.manifest import FINISHED, write_manifest
from soup.outputs.mlflow_model import TAG_INGREDIENT_RUNS, TAG_REGISTERED
from soup.pipeline import soup_experiment
from soup.inputs.records import (KIND_SOUP, KIND_SWEEP, KIND_TRIAL, TAG_BASE, TAG_MANIFEST, TAG_PARENT, TAG_STATUS,
                                 TAG_TRIAL_ID)
from trainers.tracking import TAG_CHECKPOINT, TAG_KIND, artifact_location
from soup.outputs.report import format_spread
from soup.outputs.soup_run import STAGE_SECONDS
from sweep.config import SoupSection
from trainers.config import TrainConfig
from trainers.errors import UserError


@pytest.fixture()
def recorded_sweep(soup_inputs, tmp_path):
    """An MLflow experiment holding a sweep run that points at a manifest and a base, as sweep.run leaves it."""
    _, base_dir, ingredients = soup_inputs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("recorded", artifact_location=artifact_location(uri))  # as a sweep does
    write_manifest(str(tmp_path / "ingredients.parquet"), ingredients)
    run = client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_BASE: base_dir,
                                                 TAG_MANIFEST: str(tmp_path / "ingredients.parquet")})
    return uri, client, run.info.run_id


def test_the_sweep_config_soup_section_reaches_the_stage(recorded_sweep):
    uri, client, sweep_run_id = recorded_sweep
    section = SoupSection(methods=["best", "uniform", "greedy"], device="cpu", greedy_repeats=2,
                          register_as="sweep-soup", register_method="uniform")
    result = soup_experiment(uri, "recorded", **section.model_dump())
    run = client.get_run(result.run_id)
    assert run.data.tags[TAG_KIND] == KIND_SOUP and run.data.tags[TAG_PARENT] == sweep_run_id
    assert run.data.params["methods"] == "best,uniform,greedy" and run.data.params["greedy_repeats"] == "2"
    spread = {k for k in run.data.metrics if k.startswith("greedy/repeats/")}
    assert {"greedy/repeats/test/top1_mean", "greedy/repeats/heldout/top1_std"} <= spread
    repeats = json.loads(Path(client.download_artifacts(result.run_id, "greedy_repeats.json")).read_text())
    assert len(repeats["data"]) == 2
    assert run.data.tags[TAG_REGISTERED] == "sweep-soup/1"
    version = client.get_model_version("sweep-soup", "1")
    assert version.tags[TAG_INGREDIENT_RUNS] == "run-of-trial1,run-of-trial2,run-of-trial3"
    meta = json.loads(Path(client.download_artifacts(result.run_id, "soups/uniform/meta.json")).read_text())
    assert meta["soup_run_id"] == result.run_id and meta["method"] == "uniform"
    assert meta["lineage"] == {f"trial{i}": f"run-of-trial{i}" for i in (1, 2, 3)}
    assert "zeroshot/test/top1" not in run.data.metrics and "uniform/test/mcnemar_p" in run.data.metrics
    assert re.match(r"greedy soup over 2 random orders: heldout \(selection\) [\d.]+ ± [\d.]+% \[",
                    format_spread(result.outcome))


def test_the_soup_run_spans_the_stage_and_says_what_it_made(recorded_sweep):
    uri, client, _ = recorded_sweep
    result = soup_experiment(uri, "recorded", ["uniform", "greedy"], device="cpu")
    run = client.get_run(result.run_id)
    # open from before the first ingredient was scored until after the last write (it used to be created
    # at the end, lasting only the logging)
    assert run.info.end_time - run.info.start_time >= 1000 * run.data.metrics[STAGE_SECONDS] - 1
    assert run.data.metrics["greedy/selection/heldout/top1"] == run.data.metrics["greedy/heldout/top1"]
    assert json.loads(run.data.params["wiseft_alphas"]) == [round(0.1 * i, 1) for i in range(11)]  # JSON
    wide = json.loads(Path(client.download_artifacts(result.run_id, "comparison_wide.json")).read_text())
    assert wide["columns"][:3] == ["method", "selection: heldout top-1 %", "test top-1 %"]
    assert [row[0] for row in wide["data"]] == ["uniform", "greedy"]
    per_class = json.loads(Path(client.download_artifacts(result.run_id, "per_class.json")).read_text())
    assert per_class["columns"][:3] == ["method", "set", "class"] and len(per_class["data"]) > 0
    meta = json.loads(Path(client.download_artifacts(result.run_id, "soups/greedy/meta.json")).read_text())
    greedy_test = next(r for r in result.outcome.table if r["method"] == "greedy" and r["set"] == "test")
    assert meta["metrics"]["test"]["top1"] == greedy_test["top1"] and "selection/heldout" in meta["metrics"]
    assert set(meta["member_runs"]) == set(meta["members"])
    assert all(m["mlflow_run_id"].startswith("run-of-") and "config" in m for m in meta["member_runs"].values())


def test_methods_tie_rule_and_device_reach_the_soup_run_and_bad_alphas_are_refused(recorded_sweep):
    uri, client, _ = recorded_sweep
    result = soup_experiment(uri, "recorded", ["greedy"], ">", "cpu")
    run = client.get_run(result.run_id)
    assert run.data.params["tie_rule"] == ">" and run.data.params["methods"] == "greedy"
    assert [r.name for r in result.outcome.results] == ["greedy"]
    with pytest.raises(UserError, match="soup: wiseft_alphas: .*each in \\[0, 1\\]"):
        soup_experiment(uri, "recorded", ["wiseft"], wiseft_alphas=[0.5, 2])


def test_a_sweep_without_usable_trials_or_base_is_a_one_line_error(soup_inputs, tmp_path):
    from soup.inputs.manifest import FAILED, Ingredient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("broken", artifact_location=artifact_location(uri))
    manifest = str(tmp_path / "ingredients.parquet")
    write_manifest(manifest, [Ingredient("t0", FAILED, reason="CUDA out of memory")])
    client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_MANIFEST: manifest,
                                           TAG_BASE: str(tmp_path / "never-written")})
    with pytest.raises(UserError, match="no finished trials \\(1 trials: t0: status failed: CUDA out of memory"):
        soup_experiment(uri, "broken")
    write_manifest(manifest, soup_inputs[2])
    with pytest.raises(UserError, match="base checkpoint .*never-written cannot be read"):
        soup_experiment(uri, "broken")


def record_trial_run(client: MlflowClient, experiment_id: str, sweep_run_id: str, trial_id: str, status: str,
                     checkpoint: str = "") -> str:
    """A trial run as the sweep's MLflow callback leaves it (status, last reported checkpoint, config)."""
    tags = {TAG_KIND: KIND_TRIAL, TAG_PARENT: sweep_run_id, TAG_TRIAL_ID: trial_id, TAG_STATUS: status,
            **({TAG_CHECKPOINT: checkpoint} if checkpoint else {})}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in TrainConfig().to_params().items()][:100])
    return run_id


def test_a_sweep_that_died_before_its_manifest_is_souped_from_its_trial_runs(soup_inputs, tmp_path, capsys, caplog):
    _, base_dir, ingredients = soup_inputs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("died", artifact_location=artifact_location(uri))
    manifest = str(tmp_path / "never-written" / "ingredients.parquet")
    sweep_run_id = client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_BASE: base_dir,
                                                          TAG_MANIFEST: manifest}).info.run_id
    for ingredient in ingredients:
        record_trial_run(client, experiment_id, sweep_run_id, ingredient.trial_id, FINISHED, ingredient.checkpoint)
    record_trial_run(client, experiment_id, sweep_run_id, "trial9", "running", str(tmp_path / "gone"))
    code = greedy.main(["--experiment", "died", "--tracking-uri", uri, "--methods", "best,uniform,greedy",
                        "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "stopped before writing its manifest" in caplog.text and "--resume died" in caplog.text
    (soup_run,) = [r for r in client.search_runs([experiment_id]) if r.data.tags.get(TAG_KIND) == KIND_SOUP]
    assert soup_run.data.params["ingredients"] == "3" and soup_run.data.params["manifest"].startswith("rebuilt")
    left_out = json.loads(Path(client.download_artifacts(soup_run.info.run_id, "left_out.json")).read_text())
    assert "had not ended when the sweep stopped" in left_out["trial9"]
    assert not Path(manifest).parent.exists()  # nothing written into the sweep's storage


def test_a_sweep_that_died_before_any_trial_is_a_one_line_error(tmp_path, capsys):
    base_dir = str(tmp_path / "base")  # never read: the stage stops before
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("died-early")
    client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_BASE: base_dir,
                                           TAG_MANIFEST: str(tmp_path / "ingredients.parquet")})
    assert greedy.main(["--experiment", "died-early", "--tracking-uri", uri]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stopped before writing its manifest" in errors[0]
    err = errors[0]
    assert "before any trial run was recorded: there is nothing to soup" in err
