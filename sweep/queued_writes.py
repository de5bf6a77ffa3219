"""MLflow writes applied in order by one background thread, so that an outage of the tracking server
neither stalls the sweep nor loses what the trials reported.

Tune calls its callbacks on its own loop, and a trial's `tune.report` waits for that loop: a callback
blocked on an unreachable server would stop every trial at its next report. So the trial-run
callback only queues its writes. MLflow's client already retries a failed request
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default, with exponential backoff: about 4 minutes); a write
that still fails for a transient reason (connection refused, HTTP 5xx or 429) stays at the head of
the queue and is retried with backoff while the sweep runs. `flush` waits a bounded time at the end.

Tables are written once per run and file (`log_table_once`): MlflowClient.log_table appends to a
file the run already has, so a retried write whose upload had got through, or a resumed sweep that
logs a trial's table again, would repeat its rows. The first whole table stays (one file upload; if
MLflow failed after it, before the tag that lists the table, it is still a downloadable artifact).
"""
from __future__ import annotations

import logging
import posixpath
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
STAND_IN_PREFIX = "queued-run-"


@dataclass
class Write:
    # an MlflowClient method (log_table: log_table_once) whose first argument is a run id (or, create_run,
    # an experiment id)
    method: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    stand_in: str | None = None  # create_run: the id handed out before the run exists


def refused(err: Exception) -> bool:
    """The server answered and rejected the write (HTTP 4xx other than 429): retrying cannot help."""
    if not isinstance(err, MlflowException):
        return False
    status = err.get_http_status_code()
    return 400 <= status < 500 and status != 429


Table = dict[str, list]


def log_table_once(client: MlflowClient, run_id: str, data: Table | Callable[[], Table], artifact_file: str) -> bool:
    """`client.log_table`, unless the run already has `artifact_file` (then nothing: see the module's
    docstring). `data` may be a function computing the table; it is called only when the table is
    written, and if it raises, the table is left out with a warning. True when the table was written."""
    folder = posixpath.dirname(artifact_file) or None
    if any(a.path == artifact_file for a in client.list_artifacts(run_id, folder)):
        log.info("run %s already has the table %s; not logged again", run_id, artifact_file)
        return False
    if callable(data):
        try:
            data = data()
        except Exception as err:  # retrying cannot make a missing file appear; the writes behind go on
            log.warning("table %s of MLflow run %s left out: %s", artifact_file, run_id, err)
            return False
    client.log_table(run_id, data, artifact_file)
    return True


class QueuedWrites:
    """The write methods of MlflowClient that the trial runs use, queued; `create_run` returns a
    stand-in run id at once, which later writes may use and which is resolved when they are applied."""

    def __init__(self, client: MlflowClient, max_backoff_s: float = 30.0):
        self.client, self.max_backoff_s = client, max_backoff_s
        self._pending: deque[Write] = deque()
        self._changed = threading.Condition()
        self._run_ids: dict[str, str] = {}  # stand-in -> run id
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None

    def search_runs(self, *args, **kwargs):  # reads go straight to the server
        return self.client.search_runs(*args, **kwargs)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def create_run(self, experiment_id: str, **kwargs: Any) -> str:
        stand_in = f"{STAND_IN_PREFIX}{uuid.uuid4().hex}"
        self._put(Write("create_run", (experiment_id,), kwargs, stand_in))
        return stand_in

    def log_batch(self, run_id: str, **kwargs: Any) -> None:
        self._put(Write("log_batch", (run_id,), kwargs))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._put(Write("set_tag", (run_id, key, value)))

    def set_terminated(self, run_id: str, status: str) -> None:
        self._put(Write("set_terminated", (run_id, status)))

    def update_run(self, run_id: str, status: str) -> None:
        self._put(Write("update_run", (run_id, status)))

    def log_table(self, run_id: str, data: Table | Callable[[], Table], artifact_file: str) -> None:
        """`log_table_once` on the writer thread: a table given as a function is computed there."""
        self._put(Write("log_table", (run_id, data, artifact_file)))

    def run_id(self, run_id: str) -> str | None:
        """The MLflow run id behind a stand-in (None until its run is created); others unchanged."""
        return self._run_ids.get(run_id) if run_id.startswith(STAND_IN_PREFIX) else run_id

    def pending(self) -> int:
        with self._changed:
            return len(self._pending)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write is applied; False if some are still pending after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _put(self, write: Write) -> None:
        with self._changed:
            self._pending.append(write)
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._apply_forever, name="mlflow-writes", daemon=True)
                self._thread.start()

    def _apply_forever(self) -> None:
        delay = 1.0
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                write = self._pending[0]
            try:
                self._apply(write)
            except Exception as err:
                if not refused(err):
                    self._note_outage(err)
                    time.sleep(delay)
                    delay = min(2 * delay, self.max_backoff_s)
                    continue  # the same write again: order is kept
                log.error("MLflow refused %s on run %s (%s); left out", write.method, write.args[0], err)
            self._note_recovery()
            delay = 1.0
            with self._changed:
                self._pending.popleft()
                self._changed.notify_all()

    def _apply(self, write: Write) -> None:
        args = (self._run_ids.get(write.args[0], write.args[0]), *write.args[1:])
        if args[0].startswith(STAND_IN_PREFIX):  # its create_run was refused: nothing to write to
            raise MlflowException(f"run {args[0]} was never created", error_code="RESOURCE_DOES_NOT_EXIST")
        if write.method == "log_table":
            log_table_once(self.client, *args, **write.kwargs)
            return
        result = getattr(self.client, write.method)(*args, **write.kwargs)
        if write.stand_in:
            self._run_ids[write.stand_in] = result.info.run_id

    def _note_outage(self, err: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("MLflow at %s is not answering (%s); training goes on: the trial runs' %d pending "
                        "writes are kept in order and retried until it is back",
                        self.client.tracking_uri, str(err).splitlines()[0][:300], self.pending())

    def _note_recovery(self) -> None:
        if self._failing_since is not None:
            log.warning("MLflow at %s answers again after %.0f s; writing the %d kept writes",
                        self.client.tracking_uri, time.monotonic() - self._failing_since, self.pending())
            self._failing_since = None
