"""Storage that cannot be written for a while: the driver's writes and the trials wait for it."""
from __future__ import annotations

import glob
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from soup.inputs.records import KIND_SOUP, TAG_TRIAL_ID
from trainers.tracking import TAG_KIND
from ray.train import WorkerGroupError

from sweep.cluster import check_storage_writable
from sweep.storage_faults import StorageUnwritable, fit_through_storage_faults, retry_write
from trainers.errors import UserError
from sweep.tracking import TAG_REASON, TAG_STATUS
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
def test_trial_storage_unwritable_for_a_while_is_waited_for_and_for_too_long_fails_the_trial(demo_data, tmp_path):
    """Trials run one at a time here. The first one's Train run folder refuses writes until the trial
    waits for it: it resumes and finishes. The second one's stays unwritable past the patience: that
    trial fails, saying why; the first one is the soup's ingredient."""
    tree = tiny_sweep_tree(demo_data, tmp_path, search={"num_samples": 2, "seed": 1, "space": {}})
    tree["optim"]["epochs"] = 4
    tree["resources"]["storage_patience_s"] = 30
    tree["soup"] = {"methods": ["best", "uniform", "greedy"]}
    uri, log = tree["mlflow"]["tracking_uri"], tmp_path / "log.txt"
    # --verbose: the trials' log lines (waiting, resuming) in the sweep's output, read while it runs
    sweep = start_sweep(["--config", str(write_config(tmp_path, tree)), "--verbose"], log)
    first = wait_for_a_checkpoint(tmp_path / "storage", sweep, log)
    with unwritable(first):  # Train's own retry of a failed upload fails again at once; the trial waits
        wait_for(lambda: "its storage is not writable" in log.read_text(), "the trial to wait", sweep, log)
    second = wait_for_a_checkpoint(tmp_path / "storage", sweep, log, besides=first)
    with unwritable(second):
        wait_for(lambda: status_of(uri, trial_id(second)) == "failed", "the trial to give up", sweep, log)
    output = finish(sweep, log)
    assert "writable again: resuming the Train run from its last checkpoint" in output
    runs = {r.data.tags[TAG_TRIAL_ID]: r for r in trial_runs(uri, "tiny-sweep")}
    finished, failed = runs[trial_id(first)], runs[trial_id(second)]
    assert finished.data.tags[TAG_STATUS] == "finished" and epochs_logged(uri, finished.info.run_id) == [1, 2, 3, 4]
    assert failed.data.tags[TAG_STATUS] == "failed"
    assert f"could not write to {second}" in failed.data.tags[TAG_REASON]  # the real reason, not "killed"
    assert len(glob.glob(f"{first}/checkpoint_*/")) == 1  # the upload whose registration failed was removed
    (soup,) = soup_runs(uri)
    assert soup.data.params["ingredients"] == "1"


def wait_for_a_checkpoint(storage: Path, sweep, log: Path, besides: Path | None = None) -> Path:
    """The Train run folder (other than `besides`) that first holds a checkpoint."""
    def folders() -> list[Path]:
        checkpoints = map(Path, glob.glob(f"{storage}/tiny-sweep-train-*/checkpoint_*/"))
        return [p.parent for p in checkpoints if p.parent != besides]

    wait_for(folders, "a first checkpoint", sweep, log, interval_s=0.2)
    return folders()[0]


def status_of(uri: str, trial: str) -> str | None:
    return next((r.data.tags.get(TAG_STATUS) for r in trial_runs(uri, "tiny-sweep")
                 if r.data.tags[TAG_TRIAL_ID] == trial), None)


def trial_id(run_folder: Path) -> str:
    return run_folder.name.removeprefix("tiny-sweep-train-")


def soup_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`{TAG_KIND}` = '{KIND_SOUP}'")


def test_a_worker_error_about_other_files_fails_the_trial_at_once_and_one_about_its_folder_waits(tmp_path):
    """A data shard missing on a worker's node is not the storage: no waiting for `patience_s` and no
    "could not write" in the end, but Train's own error at once. An OSError naming the run folder,
    with the folder writable again by the time it is probed, is fitted again."""
    run_folder = tmp_path / "tiny-sweep-train-0a1b2c"
    missing_shard = FileNotFoundError(f"Failed to open local file '{tmp_path}/data/train/shard-0.parquet'")
    with pytest.raises(WorkerGroupError):
        fit_through_storage_faults(lambda: failing_fit(missing_shard), str(run_folder), patience_s=60)

    upload = PermissionError(f"[Errno 13] Failed to open local file '{run_folder}/checkpoint_0/model.safetensors'")
    attempts = iter([upload, None])
    assert fit_through_storage_faults(lambda: failing_fit(next(attempts)), str(run_folder), patience_s=60) == "fit"


def failing_fit(cause: OSError | None) -> str:
    """A Train fit whose worker 0 raised `cause` (Ray's own error type, as TorchTrainer.fit raises it)."""
    if cause is None:
        return "fit"
    raise WorkerGroupError("a worker failed", {0: cause})


def test_storage_the_driver_and_the_nodes_cannot_write_is_named_with_where(ray_cluster, s3_server, monkeypatch):
    """Remote storage is probed from the driver and from every node (a local path is checked on the driver
    before Ray starts): a bucket that is not there fails both, and the message says so."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=r"storage_path s3://no-such-bucket/sweeps is not writable from driver, "
                                        r"node [0-9a-f]{12} \("):
        check_storage_writable("s3://no-such-bucket/sweeps")
