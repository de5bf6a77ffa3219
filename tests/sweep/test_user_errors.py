"""Bad input fails before any training with one line that names the problem and the fix."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from soup import greedy
from soup.ingredients import FAILED, Ingredient, write_manifest
from soup.records import KIND_SWEEP, TAG_BASE, TAG_KIND, TAG_MANIFEST
from sweep import run
from tests.conftest import tiny_sweep_tree

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, tree: dict) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # log lines may come before it; the error is one line, the last
    assert last.startswith("error: ") and sum(line.startswith("error: ") for line in err.splitlines()) == 1
    return last


@pytest.mark.parametrize("sets, expected", [
    (["optim.lrr=1"], "optim.lrr: unknown key"),
    (["optim.epochs=three"], "optim.epochs: Input should be a valid integer"),
    (["optim.lr=-0.001"], "optim.lr: Input should be greater than 0"),
    (["optim.lr"], "--set 'optim.lr': use KEY=VALUE"),
    (["anytime.enabled=false", "search.objective=soup_gain"],
     "search.objective soup_gain needs the anytime soup: set anytime.enabled: true"),
    (["anytime.enabled=false", "anytime.stop_after=3"], "anytime.stop_after needs the anytime soup"),
])
def test_bad_config_values(sets, expected, capsys, demo_data, tmp_path):
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path))
    code = run.main(["--config", config, *[a for s in sets for a in ("--set", s)]])
    assert expected in one_line_error(capsys, code)


def test_missing_config_file(capsys, tmp_path):
    assert "does not exist" in one_line_error(capsys, run.main(["--config", str(tmp_path / "nope.yaml")]))


def test_missing_data_path_fails_before_training(capsys, demo_data, tmp_path):
    config = write_config(tmp_path, tiny_sweep_tree({**demo_data, "val": str(tmp_path / "gone.parquet")}, tmp_path))
    err = one_line_error(capsys, run.main(["--config", config]))
    assert "gone.parquet does not exist" in err
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()])


def test_label_outside_the_class_list(capsys, demo_data, tmp_path):
    table = pq.read_table(demo_data["heldout"])
    labels = table.column("label").to_pylist()
    labels[3] = 17
    bad = tmp_path / "heldout.parquet"
    pq.write_table(table.set_column(1, "label", pa.array(labels, pa.int32())), bad)
    config = write_config(tmp_path, tiny_sweep_tree({**demo_data, "heldout": str(bad)}, tmp_path))
    assert "labels [17] outside the class list" in one_line_error(capsys, run.main(["--config", config]))


def test_experiment_that_does_not_exist(capsys, tmp_path):
    code = greedy.main(["--experiment", "no-such-sweep", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert "experiment 'no-such-sweep' not found" in one_line_error(capsys, code)


def test_experiment_with_no_finished_trials(capsys, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("all-failed")
    manifest = str(tmp_path / "ingredients.parquet")
    write_manifest(manifest, [Ingredient("t0", FAILED, reason="CUDA out of memory"), Ingredient("t1", FAILED)])
    run_id = client.create_run(experiment_id, tags={TAG_KIND: KIND_SWEEP, TAG_MANIFEST: manifest,
                                                    TAG_BASE: str(tmp_path / "base")}).info.run_id
    client.set_terminated(run_id)
    err = one_line_error(capsys, greedy.main(["--experiment", experiment_id, "--tracking-uri", uri]))
    assert "no finished trials" in err and "t0: status failed: CUDA out of memory" in err


def test_experiment_without_a_sweep_run(capsys, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    MlflowClient(uri).create_experiment("not-a-sweep")
    err = one_line_error(capsys, greedy.main(["--experiment", "not-a-sweep", "--tracking-uri", uri]))
    assert "holds no soupsweep sweep run" in err


def test_the_real_command_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweep.run", "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --config:")
    assert "Traceback" not in done.stderr


def test_a_sweep_without_pretrained_weights_is_warned_about():
    from sweep.config import SweepConfig

    assert SweepConfig.model_validate({"model": {"pretrained": "laion2b_s34b_b79k"}}).warnings() == []
    (random_clip,) = SweepConfig.model_validate({}).warnings()
    assert random_clip.startswith("model.pretrained is null")
    assert "preset model-soups" in SweepConfig.model_validate({"preset": "model-soups"}).warnings()[1]
