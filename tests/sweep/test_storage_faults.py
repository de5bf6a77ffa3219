"""Storage that cannot be written for a while: the driver's writes and the trials wait for it."""
from __future__ import annotations

import glob
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from soup.records import KIND_SOUP, TAG_KIND
from sweep.storage_faults import StorageUnwritable, retry_write
from sweep.tracking import TAG_STATUS
from tests.conftest import tiny_sweep_tree
from tests.sweep.storage import set_writable, unwritable
from tests.sweep.sweeps import epochs_logged, finish, start_sweep, trial_runs, wait_for, write_config

RESUME = "python -m sweep.run --resume tiny-sweep"


def write_file(path: Path) -> str:
    path.write_text("manifest")
    return "written"


def test_a_driver_write_waits_for_the_storage_to_come_back(tmp_path):
    folder = tmp_path / "sidecar"
    folder.mkdir()
    set_writable(folder, False)
    threading.Timer(1.5, set_writable, (folder, True)).start()  # back after 1.5 s
    try:
        assert retry_write(lambda: write_file(folder / "m.parquet"), str(folder / "m.parquet"), str(folder), 30,
                           RESUME) == "written"
    finally:
        set_writable(folder, True)
    assert (folder / "m.parquet").read_text() == "manifest"


def test_a_driver_write_gives_up_after_its_patience_naming_the_path_and_resume(tmp_path):
    folder = tmp_path / "sidecar"
    folder.mkdir()
    with unwritable(folder), pytest.raises(StorageUnwritable) as raised:
        retry_write(lambda: write_file(folder / "m.parquet"), str(folder / "m.parquet"), str(folder), 1, RESUME)
    message = str(raised.value)
    assert "\n" not in message and str(folder / "m.parquet") in message and RESUME in message


@pytest.mark.slow
def test_trial_storage_unwritable_for_a_while_is_waited_for(demo_data, tmp_path):
    tree = tiny_sweep_tree(demo_data, tmp_path, search={"num_samples": 2, "seed": 1, "space": {}})
    tree["optim"]["epochs"] = 4
    tree["soup"] = {"methods": ["best", "uniform", "greedy"]}
    uri, log = tree["mlflow"]["tracking_uri"], tmp_path / "log.txt"
    sweep = start_sweep(["--config", str(write_config(tmp_path, tree))], log)
    checkpoints = f"{tmp_path}/storage/tiny-sweep-train-*/checkpoint_*"
    wait_for(lambda: glob.glob(checkpoints), "a first checkpoint", sweep, log, interval_s=0.2)
    run_folder = Path(glob.glob(checkpoints)[0]).parent
    with unwritable(run_folder):  # Train retries its worker group at once and fails again; the trial waits
        wait_for(lambda: "its storage is not writable" in log.read_text(), "the trial to wait", sweep, log)
    output = finish(sweep, log)
    assert "writable again: resuming the Train run from its last checkpoint" in output
    runs = trial_runs(uri, "tiny-sweep")
    assert len(runs) == 2 and all(r.data.tags[TAG_STATUS] == "finished" for r in runs)
    for run in runs:
        assert epochs_logged(uri, run.info.run_id) == [1, 2, 3, 4]
    assert soup_runs(uri)  # the soup was made
    for folder in glob.glob(f"{tmp_path}/storage/tiny-sweep-train-*"):  # the failed upload was not left behind
        assert len(glob.glob(f"{folder}/checkpoint_*/")) == 1, sorted(Path(folder).iterdir())


def soup_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`{TAG_KIND}` = '{KIND_SOUP}'")
