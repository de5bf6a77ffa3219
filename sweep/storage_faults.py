"""Storage that cannot be written for a while (a full disk, a read-only remount, an expired token):
trials and the driver wait for it with bounded back-off instead of failing at the first write.

Ray Train retries a worker group whose checkpoint upload raised (FailureConfig.max_failures), but at
once, and it never retries its controller's own failed write (its checkpoint snapshot: only
worker-group start-up errors are retryable controller errors in Train V2's failure policy). So a
trial wraps `TorchTrainer.fit`: when it fails while its Train run folder is not writable, the trial
waits, probing with back-off, and fits again under the same run name, which resumes from the last
checkpoint Train registered. After `resources.storage_patience_s` it fails with the real reason.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Callable, TypeVar

import pyarrow.fs as pafs
from ray.train import ControllerError, TrainingFailedError, WorkerGroupError

from trainers.errors import UserError
from trainers.uris import absolute

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_DELAY_S, MAX_DELAY_S = 2.0, 30.0


class StorageUnwritable(UserError):
    """Storage stayed unwritable for the patience given: the message names the path."""


def probe_write(storage: str) -> str | None:
    """Write and delete a small file under `storage`; returns the error, or None when it worked."""
    try:
        fs, path = pafs.FileSystem.from_uri(absolute(storage))
        fs.create_dir(path, recursive=True)
        probe = f"{path}/.soupsweep-probe-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(probe) as stream:
            stream.write(b"ok")
        fs.delete_file(probe)
    except Exception as err:  # permission, missing bucket, credentials: all mean "cannot write here"
        return f"{type(err).__name__}: {err}"
    return None


def wait_until_writable(folder: str, patience_s: float) -> str | None:
    """Probe `folder` with back-off until a write works (None) or `patience_s` has passed (the error)."""
    deadline, delay = time.monotonic() + patience_s, FIRST_DELAY_S
    problem = probe_write(folder)
    while problem is not None and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(2 * delay, MAX_DELAY_S)
        problem = probe_write(folder)
    return problem


def retry_write(write: Callable[[], T], path: str, folder: str, patience_s: float, resume_hint: str) -> T:
    """`write()`, retried while `folder` is not writable, for at most `patience_s`; then StorageUnwritable
    naming `path` and how to continue (`resume_hint`)."""
    while True:
        try:
            return write()
        except OSError as err:
            log.warning("cannot write %s (%s); retrying while the storage recovers (up to %.0f s)", path, err,
                        patience_s)
            if wait_until_writable(folder, patience_s) is not None:
                raise StorageUnwritable(f"storage: cannot write {path} ({type(err).__name__}: {err}) for "
                                        f"{patience_s:.0f} s; nothing trained is lost: once it is writable, "
                                        f"continue with {resume_hint}") from None


def storage_failure(err: TrainingFailedError, run_folder: str) -> OSError | None:
    """The OSError behind a failed Train run (its controller's or a worker's) that names its run folder,
    if one does. One naming other files, such as a data shard missing on a node, is not the storage's:
    waiting would not mend it. pyarrow's errors name their path in the message, not in `filename`."""
    causes = [err.controller_failure] if isinstance(err, ControllerError) else []
    if isinstance(err, WorkerGroupError):
        causes = [getattr(e, "cause", e) for e in err.worker_failures.values()]
    run_name = run_folder.rstrip("/").rsplit("/", 1)[-1]  # unique per trial; an S3 error names the key
    return next((c for c in causes if isinstance(c, OSError) and run_name in f"{c} {c.filename or ''}"), None)


def fit_through_storage_faults(fit: Callable[[], T], run_folder: str, patience_s: float,
                               before_retry: Callable[[], object] = lambda: None) -> T:
    """`fit()` (a Ray Train fit), fitted again from its last checkpoint while its run folder recovers
    from being unwritable, for `patience_s` in all from the first such failure; then raises the reason.
    `before_retry` runs once the folder is writable again (it tidies what the failed fit left)."""
    deadline = None
    while True:
        try:
            return fit()
        except TrainingFailedError as err:
            problem, cause = probe_write(run_folder), storage_failure(err, run_folder)
            if problem is None and cause is None:
                raise  # not the storage: Train's own retries (max_failures) were spent on it
            deadline = deadline or time.monotonic() + patience_s
            log.warning("Train run %s failed: its storage is not writable (%s); waiting for it, then resuming "
                        "from its last checkpoint", run_folder, problem or f"{type(cause).__name__}: {cause}")
            problem = wait_until_writable(run_folder, max(0.0, deadline - time.monotonic())) or (
                None if time.monotonic() < deadline else problem or f"{type(cause).__name__}: {cause}")
            if problem is not None:
                raise StorageUnwritable(f"storage: the trial could not write to {run_folder} for {patience_s:.0f} "
                                        f"s ({problem}); its last checkpoint is kept") from err
            log.warning("storage %s is writable again: resuming the Train run from its last checkpoint", run_folder)
            before_retry()
