"""`python -m trainers.run --config ...`: one training without Ray, as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from soup.scoring.score import base_reference, check
from soup.inputs.weights import Converter, read_weights
from soup.inputs.base import base_from_checkpoint
from tests.conftest import data_section

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers.run", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_one_run_trains_and_leaves_a_checkpoint_the_soup_reads(demo_data, pretrained_file, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": data_section(demo_data), "model": {"pretrained": pretrained_file, "templates": "simple"},
        "optim": {"epochs": 2, "lr": 1e-3, "batch_size": 32, "warmup_steps": 2}, "method": {"name": "ft"}}))
    done = run(["--config", str(config), "--out", "out", "--set", "optim.epochs=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"checkpoint: out/checkpoint" in done.stdout
    history = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]  # --set won over the file
    base = base_from_checkpoint(str(tmp_path / "out" / "base"), tmp_path)
    weights = read_weights(str(tmp_path / "out" / "checkpoint"), tmp_path, Converter(base.config.model, base.classes))
    assert check(weights, base_reference(base), tolerance=0.5) is None
    assert weights.meta["metrics"]["val/top1"] == history[-1]["val/top1"] > 0.4


def test_a_bad_key_is_one_line_and_exit_code_2(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("optim: {lrr: 1}\n")
    done = run(["--config", str(config)], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: optim.lrr: unknown key (allowed here: ")


@pytest.mark.parametrize("device, says", [
    ("quantum", "--device quantum: use auto, cpu, cuda or cuda:N"),
    pytest.param("cuda", "--device cuda: no CUDA GPU is visible", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU")),
    (f"cuda:{torch.cuda.device_count()}", f"--device cuda:{torch.cuda.device_count()}: ")])
def test_a_device_this_machine_lacks_is_one_line_before_anything_is_written(demo_data, tmp_path, device, says):
    config = tmp_path / "train.yaml"  # a config that trains: only the device is wrong
    config.write_text(yaml.safe_dump({"data": data_section(demo_data), "optim": {"epochs": 1}}))
    done = run(["--config", str(config), "--out", "out", "--device", device], tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {says}"), done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]


def test_runs_stopped_by_a_signal_end_killed_or_failed_in_mlflow_never_running(demo_data, pretrained_file, tmp_path):
    """SIGKILL runs no handler: the next run of the experiment ends the dead one's run KILLED. SIGTERM
    (a plain `kill PID`) ends the run FAILED on its way out, as Ctrl-C does."""
    from mlflow.tracking import MlflowClient

    config, uri = tmp_path / "train.yaml", f"sqlite:///{tmp_path / 'mlflow.db'}"
    config.write_text(yaml.safe_dump({"data": data_section(demo_data), "model": {"pretrained": pretrained_file},
                                      "optim": {"epochs": 20, "batch_size": 32, "warmup_steps": 2}}))
    codes = []
    for out, sig in (("killed", signal.SIGKILL), ("terminated", signal.SIGTERM)):
        with (tmp_path / f"{out}.log").open("w") as log:
            training = subprocess.Popen([sys.executable, "-m", "trainers.run", "--config", str(config), "--out", out,
                                         "--tracking-uri", uri], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        history = tmp_path / out / "metrics.jsonl"
        while training.poll() is None and not (history.is_file() and history.read_text()):
            time.sleep(0.1)  # until the first epoch is reported: the run is open in MLflow
        assert training.poll() is None, (tmp_path / f"{out}.log").read_text()[-2000:]
        os.kill(training.pid, sig)
        codes.append(training.wait(timeout=120))
    assert codes == [-signal.SIGKILL, 128 + signal.SIGTERM]
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time"])
    assert [r.info.status for r in runs] == ["KILLED", "FAILED"]


def test_a_locked_sqlite_database_is_one_line_before_anything_is_written(demo_data, tmp_path, capsys):
    """Another process holds the database's write lock (an open sqlite3 shell, a stuck writer): MLflow
    would wait, then fail its first write with a traceback, after the work. A real lock, from a real
    second connection."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from soup import greedy
    from trainers.run import main

    database = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()  # MLflow's tables
    capsys.readouterr()  # and its lines saying so
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": data_section(demo_data)}))
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        uri = f"sqlite:///{database}"
        codes = [main(["--config", str(config), "--out", str(tmp_path / "out"), "--tracking-uri", uri]),
                 greedy.main(["--experiment", "any", "--tracking-uri", uri])]
    finally:
        holder.rollback()
    errors = capsys.readouterr().err.splitlines()
    assert codes == [2, 2] and not (tmp_path / "out").exists()
    assert len(errors) == 2 and all(line.startswith("error: ") and f"{database} stayed locked by another process "
                                    "for 5 s" in line for line in errors), errors
