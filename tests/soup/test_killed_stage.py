"""`python -m soup.greedy` stopped part-way by a real signal sent to its PID, then run again: the MLflow
record says which run was stopped, the user's export directory never holds half an export, and a
directory the user made while the stage ran is kept as it is."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from soup import greedy
from soup.inputs.explicit import ExplicitInputs
from soup.methods.options import SoupOptions
from soup.pipeline import soup_files
from trainers.config import validate

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "killed"


def stage_args(soup_inputs, demo_data, uri: str, *extra: str) -> list[str]:
    _, base_dir, _ = soup_inputs
    return ["--ingredients", str(Path(base_dir).parent / "trial*"), "--base", base_dir, "--heldout",
            demo_data["heldout"], "--test", demo_data["test"], "--tracking-uri", uri, "--experiment", EXPERIMENT,
            "--device", "cpu", "--methods", "greedy", *extra]


def signal_when(args: list[str], sig: int, ready, log: Path, env: dict) -> int:
    """Start the stage in a process, send it `sig` by PID as soon as `ready(output so far)`; its exit code."""
    with log.open("w") as out:
        stage = subprocess.Popen([sys.executable, "-m", "soup.greedy", *args], cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while stage.poll() is None and not ready(log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    assert stage.poll() is None, f"the stage ended before the signal:\n{log.read_text()}"
    os.kill(stage.pid, sig)
    return stage.wait(timeout=120)


def soup_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], order_by=["start_time"])


def test_a_stage_killed_while_exporting_leaves_nothing_half_written_and_its_rerun_finishes(
        soup_inputs, demo_data, tmp_path, caplog):
    uri, export = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "exported"
    args = stage_args(soup_inputs, demo_data, uri, "--export-open-clip", str(export))
    code = signal_when(args, signal.SIGKILL, lambda _: any(tmp_path.glob(".exported.*")),
                       tmp_path / "killed.log", dict(os.environ))
    assert code == -signal.SIGKILL and not export.exists()
    assert greedy.main(args) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")]  # the killed one's is gone
    assert (export / "open_clip_model.safetensors").is_file()
    killed, rerun = soup_runs(uri)
    assert (killed.info.status, rerun.info.status) == ("KILLED", "FINISHED")  # not two RUNNING, not two FINISHED
    assert f"soup run {killed.info.run_id} was left running by a process that was killed" in caplog.text


def test_sigterm_ends_the_soup_run_failed_and_removes_its_temporary_files(soup_inputs, demo_data, tmp_path):
    uri, scratch = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "scratch"
    scratch.mkdir()
    code = signal_when(stage_args(soup_inputs, demo_data, uri), signal.SIGTERM,
                       lambda out: re.search(r"evaluating ingredients: +[1-9]", out), tmp_path / "stage.log",
                       {**os.environ, "TMPDIR": str(scratch)})
    assert code == 128 + signal.SIGTERM
    assert [r.info.status for r in soup_runs(uri)] == ["FAILED"]
    assert not list(scratch.iterdir())


def test_an_export_directory_made_while_the_stage_ran_is_kept_and_the_run_stays_failed(
        soup_inputs, demo_data, tmp_path):
    _, base_dir, _ = soup_inputs
    uri, export = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "exported"
    options = validate(SoupOptions, {"methods": ["greedy"], "device": "cpu", "export_open_clip": str(export),
                                     "register_as": "kept-soup"}, "soup")  # the export directory is new here
    export.mkdir()
    (export / "notes.txt").write_text("the user's")
    inputs = ExplicitInputs([str(Path(base_dir).parent / "trial*")], base=base_dir, heldout=demo_data["heldout"],
                            test=demo_data["test"])
    with pytest.raises(FileExistsError, match="appeared while the soups were made"):
        soup_files(uri, inputs, options, EXPERIMENT)
    assert [p.name for p in export.iterdir()] == ["notes.txt"] and (export / "notes.txt").read_text() == "the user's"
    (run,) = soup_runs(uri)
    assert run.info.status == "FAILED"  # kept with its soups, not deleted as a mistake found before any work
    assert MlflowClient(uri).search_model_versions("name = 'kept-soup'") == []  # nothing registered from it
