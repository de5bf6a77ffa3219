"""`python -m trainers.run` with a sweep file: one run from its fixed values (the search space left aside with a
note), test and shift sets evaluated as the soup stage scores them, an MLflow run, and one-line mistakes."""
from __future__ import annotations

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from soup.scoring.evaluation import Evaluator
from soup.scoring.splits import load_eval_sets
from sweep.config import SweepConfig
from tests.conftest import tiny_sweep_tree
from tests.sweep.test_user_errors import one_line_error
from tests.trainers.test_run import run
from trainers import run as trainers_run
from trainers.checkpoint import load_checkpoint
from trainers.config import DataConfig, TrainConfig, validate
from trainers.data.store import read_split, write_split
from trainers.data.synthetic import CLASSES
from trainers.metrics import classification_report
from trainers.model import build_classifier
from trainers.run_config import SWEEP_ONLY, load_run_config
from trainers.tracking import MODEL_TRAINING, TAG_CHECKPOINT


def test_the_sweep_only_sections_are_those_of_the_sweep_config():
    assert set(SweepConfig.model_fields) - set(TrainConfig.model_fields) == set(SWEEP_ONLY)


@pytest.mark.parametrize("preset", [None, "wiseft", "model-soups"])
def test_one_run_trains_what_a_sweep_trial_starts_from(demo_data, tmp_path, preset):
    tree = tiny_sweep_tree(demo_data, tmp_path, preset=preset)
    del tree["optim"], tree["search"]["space"]  # the preset's (wiseft: lr 3e-5, 10 epochs; a search space) apply
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tree))
    one = load_run_config(str(tmp_path / "sweep.yaml"), ["seed=3"])
    assert one.train == validate(SweepConfig, {**tree, "seed": 3}).train_config()
    assert one.ignored == ["search", "resources", "storage_path"] and "search" in one.note()


def subset_shift(demo_data: dict[str, str], folder) -> str:
    """A shift set of circles and squares only: its logits are projected onto those two classes."""
    sketch = read_split(demo_data["sketch"], 32)
    keep = sketch.labels < 2
    write_split(folder, sketch.images[keep], sketch.labels[keep].tolist(), CLASSES, covers=CLASSES[:2])
    return str(folder)


def test_a_sweep_file_trains_once_evaluates_test_and_shifts_and_logs_to_mlflow(demo_data, pretrained_file, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path, pretrained=pretrained_file)
    tree["data"]["shift"]["two"] = subset_shift(demo_data, tmp_path / "two")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tree))
    done = run(["--config", "sweep.yaml", "--out", "out", "--set", "optim.epochs=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "search, resources, storage_path" in notes[0], done.stdout
    assert not (tmp_path / "storage").exists()  # a sweep-only section: nothing done with it

    client = MlflowClient(tree["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny-sweep")
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED" and experiment.tags.items() >= MODEL_TRAINING.items()
    assert logged.data.params["optim.epochs"] == "1" and logged.data.params["optim.ema_decay"] == "null"
    assert logged.data.params["model.class_names"] == "{}" and logged.data.params["model.pretrained"] == pretrained_file
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val/top1")] == [1]
    checkpoint = tmp_path / "out" / "checkpoint"
    assert logged.data.tags[TAG_CHECKPOINT] == str(checkpoint) and checkpoint.is_dir()

    # The soup stage's own scoring of the checkpoint gives the numbers printed and logged.
    sets = load_eval_sets(DataConfig.model_validate(tree["data"]), 32, torch.device("cpu"))
    weights = load_checkpoint(str(checkpoint)).state_dict
    evaluator = Evaluator(build_classifier(TrainConfig().model, len(CLASSES)), sets, torch.device("cpu"), "auto")
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}
    for name, logits in evaluator.logits(weights).items():
        if name == "heldout":
            continue
        expected = classification_report(logits, evaluator.labels(name))
        for metric in ("top1", "macro_f1", "ece"):
            assert logged.data.metrics[f"{name}/{metric}"] == pytest.approx(expected[metric], abs=1e-6), name
        assert rows[name][0] == f"{100 * expected['top1']:.2f}"
    assert "val" in rows and "heldout" not in rows
    assert logged.data.metrics["shift/two/top1"] > 0.5  # two classes: projected, not scored on all four


@pytest.fixture
def sweep_file(demo_data, pretrained_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = tiny_sweep_tree(demo_data, tmp_path, pretrained=pretrained_file)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tree))
    (tmp_path / "bad.json").write_text("{not json")
    return tmp_path


@pytest.mark.parametrize("args, says", [
    (["--set", "model.name=bad.json"], "model.name: bad.json is not valid JSON (Expecting property name"),
    (["--set", "model.pretrained=missing.safetensors"], "model.pretrained: 'missing.safetensors' is neither"),
    (["--set", "preset=fast"], "sweep.yaml: preset: unknown preset 'fast'; use one of model-soups, wiseft"),
    (["--set", "mlflow.experimnt=x"], "--set mlflow.experimnt: unknown key (allowed here: experiment, "),
    (["--tracking-uri", "foo://x"], "MLflow tracking URI 'foo://x': unknown scheme 'foo'"),
    (["--out", "bad.json"], "--out bad.json: exists and is not an empty directory"),
])
def test_mistakes_are_one_line_before_anything_is_created(sweep_file, capsys, args, says):
    before = {p: p.read_bytes() for p in sweep_file.iterdir()}
    err = one_line_error(capsys, trainers_run.main(["--config", "sweep.yaml", "--out", "out", *args]))
    assert err.startswith(f"error: {says}"), err
    assert {p: p.read_bytes() for p in sweep_file.iterdir()} == before  # no out/, no mlflow.db, nothing changed


def test_the_printed_table_names_every_set():
    metrics = {"val/top1": 0.5, "val/loss": 1.0, "test/top1": 0.25, "shift/a_long_set_name/top1": 1.0}
    lines = trainers_run.format_metrics(metrics).splitlines()
    assert [line.split()[0] for line in lines] == ["set", "val", "test", "shift/a_long_set_name"]
    assert lines[3].split()[1:] == ["100.00", "-", "-", "-"]


def test_a_diverged_run_says_so_exits_1_and_its_mlflow_run_failed(sweep_file, capsys):
    code = trainers_run.main(["--config", "sweep.yaml", "--out", "out", "--set", "optim.lr=1e6",
                              "--set", "optim.grad_clip=null", "--set", "optim.epochs=2"])
    out = capsys.readouterr().out
    assert code == 1 and "the training loss went non-finite at epoch 1: no checkpoint" in out, out
    assert not (sweep_file / "out" / "checkpoint").exists() and "top-1 %" not in out
    client = MlflowClient(f"sqlite:///{sweep_file / 'mlflow.db'}")
    [logged] = client.search_runs([client.get_experiment_by_name("tiny-sweep").experiment_id])
    assert logged.info.status == "FAILED" and logged.data.metrics["diverged"] == 1.0
