"""Bad input fails before any training with one line that names the problem and the fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from soup import greedy
from soup.inputs.manifest import FAILED, Ingredient, write_manifest
from soup.inputs.records import KIND_SWEEP, TAG_BASE, TAG_MANIFEST
from trainers.tracking import TAG_KIND, check_tracking_uri
from sweep import run
from sweep.demo import DEMO_DATA_DIR
from tests.acceptance.services import MlflowServer
from tests.conftest import RunsAShell, tiny_sweep_tree
from tests.sweep.test_job_submit import free_ports
from trainers.architectures import SHIPPED_CONFIGS

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
    MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").create_experiment("a-sweep")  # the database is there, not the name
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


def run_command(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m ...` as a user runs it (this tree first on the path), from `cwd`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=env)


def assert_one_line(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr


def test_the_demo_checks_its_overrides_before_making_its_files(tmp_path):
    done = run_command(["sweep.run", "--set", "optim.lrr=1"], tmp_path)
    assert_one_line(done, "optim.lrr: unknown key")
    assert not (tmp_path / DEMO_DATA_DIR).exists()  # no data generated, no stand-in model pretrained


@pytest.fixture
def dead_uri(monkeypatch) -> str:
    """An http tracking URI where nothing listens. MLflow's client would retry it for minutes; with its retries
    off, code that does not check the URI first fails at once with MLflow's traceback instead of hanging."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def assert_nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "storage").exists()


def test_a_tracking_server_that_does_not_answer(capsys, demo_data, tmp_path, dead_uri):
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path))
    started = time.monotonic()
    err = one_line_error(capsys, run.main(["--config", config, "--set", f"mlflow.tracking_uri={dead_uri}"]))
    assert f"MLflow tracking server {dead_uri} does not answer within 5 s (Connection refused)" in err
    assert time.monotonic() - started < 60  # seconds, not MLflow's minutes of retries
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("command", [["--resume", "sweep-x"], ["soup.greedy", "--experiment", "sweep-x"],
                                     ["soup.greedy", "--ingredients", "w/*.pt"]])
def test_the_other_commands_check_the_tracking_uri_too(capsys, tmp_path, dead_uri, command):
    main = greedy.main if command[0] == "soup.greedy" else run.main
    err = one_line_error(capsys, main([*command[command[0] == "soup.greedy":], "--tracking-uri", dead_uri]))
    assert f"MLflow tracking server {dead_uri} does not answer" in err


def test_a_tracking_uri_of_an_unknown_scheme(capsys, demo_data, tmp_path):
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path))
    err = one_line_error(capsys, run.main(["--config", config, "--set", "mlflow.tracking_uri=mlflw://host:5000"]))
    assert "MLflow tracking URI 'mlflw://host:5000': unknown scheme 'mlflw'; use one of" in err
    assert "sqlite:" in err and "http:" in err
    assert_nothing_created(tmp_path)


def test_a_file_store_and_impossible_sqlite_paths(capsys, demo_data, tmp_path):
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path))
    err = one_line_error(capsys, run.main(["--config", config, "--set", f"mlflow.tracking_uri={tmp_path / 'mlruns'}"]))
    assert "is a file store, which MLflow 3 refuses: use sqlite:///" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = one_line_error(capsys, run.main(["--config", config, "--set",
                                           f"mlflow.tracking_uri=sqlite:///{blocker / 'mlflow.db'}"]))
    assert f"cannot create {blocker / 'mlflow.db'}, {blocker} is not a writable folder" in err
    err = one_line_error(capsys, run.main(["--config", config, "--set", f"mlflow.tracking_uri=sqlite:///{blocker}"]))
    assert f"{blocker} is not a sqlite database" in err
    assert_nothing_created(tmp_path)


@pytest.mark.slow
def test_a_running_tracking_server_passes_the_check(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        check_tracking_uri(server.url)
    finally:
        server.stop()


def other_architecture(path: Path) -> str:
    """Weights of a CLIP like the tiny one but wider: what a user may pass for the wrong model.name."""
    arch = json.loads((SHIPPED_CONFIGS / "soupsweep-tiny-vit.json").read_text())
    arch["vision_cfg"]["width"] = 48
    save_file({k: v.contiguous() for k, v in open_clip.CLIP(**arch).state_dict().items()}, str(path))
    return str(path)


def test_pretrained_weights_of_another_architecture(capsys, demo_data, tmp_path):
    weights = other_architecture(tmp_path / "wider.safetensors")
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path, weights))
    err = one_line_error(capsys, run.main(["--config", config]))
    assert (f"model.pretrained: {weights} does not fit model.name soupsweep-tiny-vit (size mismatch for "
            "visual.class_embedding") in err and "set model.name to the architecture they were saved from" in err
    assert_nothing_created(tmp_path)


def test_pretrained_weights_that_pickle_code(capsys, demo_data, tmp_path):
    weights = tmp_path / "shell.pt"
    torch.save({"logit_scale": torch.zeros(()), "hook": RunsAShell(tmp_path / "it-ran")}, weights)
    config = write_config(tmp_path, tiny_sweep_tree(demo_data, tmp_path, str(weights)))
    err = one_line_error(capsys, run.main(["--config", config]))
    assert f"model.pretrained: {weights} holds code (posix.system) besides tensors and was refused unread" in err
    assert not (tmp_path / "it-ran").exists()
    assert_nothing_created(tmp_path)


def test_a_hugging_face_text_model_that_cannot_be_loaded(capsys, demo_data, tmp_path, hf_offline):
    (tmp_path / "roberta-clip.json").write_text(json.dumps(open_clip.get_model_config("roberta-ViT-B-32")))
    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["model"]["name"] = str(tmp_path / "roberta-clip.json")
    err = one_line_error(capsys, run.main(["--config", write_config(tmp_path, tree)]))
    assert "could not load the Hugging Face text model roberta-base (OSError). Without network access" in err
    assert_nothing_created(tmp_path)


def test_a_sweep_without_pretrained_weights_is_warned_about():
    from sweep.config import SweepConfig

    assert SweepConfig.model_validate({"model": {"pretrained": "laion2b_s34b_b79k"}}).warnings() == []
    (random_clip,) = SweepConfig.model_validate({}).warnings()
    assert random_clip.startswith("model.pretrained is null")
    assert "preset model-soups" in SweepConfig.model_validate({"preset": "model-soups"}).warnings()[1]
