"""Where the Train run of each trial keeps its checkpoints in the sweep's storage, which one Ray Train
kept, and the housekeeping of the others (read by the manifest, the resume's repairs, the per-class
tables; a trial removes those Train does not keep before it retries after a storage fault)."""
from __future__ import annotations

import contextlib
import logging
import posixpath

import pyarrow.fs as pafs
import ray.train

from trainers.uris import absolute, has_scheme

log = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's checkpoint folders: checkpoint_<time>
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it keeps


def train_run_prefix(experiment: str) -> str:
    """What the names of a sweep's Train runs start with (a resumed sweep finds their folders by it)."""
    return f"{experiment}-train-"


def train_run_name(experiment: str, trial_id: str) -> str:
    """Deterministic, so that a restored sweep finds each trial's Train run (and its checkpoint)."""
    return train_run_prefix(experiment) + trial_id


def train_run_folder(storage: str, experiment: str, trial_id: str) -> str:
    """URI of a trial's Train run folder, where Ray Train keeps its checkpoints."""
    return f"{storage}/{train_run_name(experiment, trial_id)}"


def checkpoint_uri(storage_path: str, path: str) -> str:
    """A checkpoint's URI: Ray gives filesystem paths, without the storage's scheme (s3://, gs://)."""
    return storage_path.split("://")[0] + "://" + path if has_scheme(storage_path) else path


def train_result(run_folder: str) -> ray.train.Result | None:
    """Ray Train's result of a Train run (its folder's URI), or None: no run folder, or no snapshot in it."""
    try:
        with _no_snapshot_notice():
            return ray.train.Result.from_path(run_folder)
    except Exception:
        return None


def kept_checkpoint(run_folder: str) -> str | None:
    """URI of the checkpoint Ray Train kept last in a Train run's folder (a URI), or None."""
    result = train_result(run_folder)
    return checkpoint_uri(run_folder, result.checkpoint.path) if result is not None and result.checkpoint else None


def final_checkpoint(storage: str, experiment: str, trial_id: str) -> str | None:
    """URI of the checkpoint Ray Train kept for a trial (the last epoch), or None."""
    return kept_checkpoint(train_run_folder(storage, experiment, trial_id))


def kept_checkpoint_names(fs: pafs.FileSystem, path: str, run_folder: str) -> set[str] | None:
    """Folder names of the checkpoints Ray Train's snapshot keeps for a run (at `path` in `fs`; URI
    `run_folder`): empty when it has no snapshot (Train has registered none), None when the snapshot
    cannot be read."""
    if fs.get_file_info(f"{path}/{SNAPSHOT}").type == pafs.FileType.NotFound:
        return set()
    result = train_result(run_folder)
    if result is None:
        return None
    kept = [checkpoint for checkpoint, _ in result.best_checkpoints or []] + [result.checkpoint]
    return {posixpath.basename(c.path.rstrip("/")) for c in kept if c is not None}


def remove_unkept_checkpoints(run_folder: str) -> list[str]:
    """Delete the checkpoint folders of a Train run (a URI) that its snapshot does not keep: uploaded
    but never registered (the controller died, or its own write failed), or left for num_to_keep to
    delete. A run whose snapshot cannot be read is left alone. Returns the URIs deleted."""
    fs, path = pafs.FileSystem.from_uri(absolute(run_folder))
    kept = kept_checkpoint_names(fs, path, run_folder)
    if kept is None:
        return []
    removed = []
    for entry in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if (entry.type == pafs.FileType.Directory and entry.base_name.startswith(CHECKPOINT_PREFIX)
                and entry.base_name not in kept):
            fs.delete_dir(entry.path)
            removed.append(checkpoint_uri(run_folder, entry.path))
    if removed:
        log.info("removed %d checkpoints that Ray Train does not keep: %s", len(removed), ", ".join(removed))
    return removed


# Reading a finished run's result makes Ray Train log, at INFO, that "a run snapshot was found ...
# delete the existing folder": meant for a new run reusing a name, wrong for a read.
SNAPSHOT_LOGGER = "ray.train.v2._internal.execution.checkpoint.checkpoint_manager"


@contextlib.contextmanager
def _no_snapshot_notice():
    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("A run snapshot was found")

    logger = logging.getLogger(SNAPSHOT_LOGGER)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
