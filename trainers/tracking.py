"""MLflow basics every command shares: the tracking URI (checked before anything is created, sqlite
paths made absolute), where a new experiment keeps its artifacts, the experiment kind the UI opens on
runs, and params as JSON. Here in trainers/ so that `python -m trainers.run` logs a run the way the
sweep (sweep/) and the soup stage (soup/) do, without importing either.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request
from mlflow.utils.uri import get_uri_scheme
from pydantic import Field, field_validator
from sqlalchemy.engine import make_url

from trainers.config import Section, param_text
from trainers.errors import UserError
from trainers.owner import is_gone
from trainers.uris import unwritable_folder

log = logging.getLogger(__name__)
TAG_KIND = "soupsweep.kind"
TAG_CHECKPOINT = "soupsweep.checkpoint"
TAG_OWNER = "soupsweep.owner"  # on soup runs and single runs: pid@host of the process writing it (trainers.owner)
ANSWER_TIMEOUT_S = 5.0  # how long a tracking server or database may take to answer the check
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
NAMED_STORES = ("databricks", "databricks-uc", "uc")  # URIs that are only a scheme's name (MLflow's rule)

# What MLflow 3.17 reads to call an experiment "Machine learning" (custom model development) rather
# than GenAI; its UI opens on the runs only with ?workflowType=machine_learning in the URL (checked in
# Chromium: the tag alone leaves the GenAI overview on a first visit), so ui_url adds it.
MODEL_TRAINING = {"mlflow.experimentKind": "custom_model_development"}


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses ./mlruns; a sqlite file beside the user


def default_tracking_uri() -> str:
    """What a command's --tracking-uri defaults to: $MLFLOW_TRACKING_URI, else DEFAULT_TRACKING_URI."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


class MlflowConfig(Section):
    """The `mlflow` section of a config file (python -m sweep.run, python -m trainers.run)."""

    tracking_uri: str = Field(DEFAULT_TRACKING_URI, description="MLflow tracking URI (sqlite file or server)")
    experiment: str = Field("", description="MLflow experiment: the sweep's identity; empty: soupsweep-<time>")

    @field_validator("tracking_uri")
    @classmethod
    def _absolute(cls, uri: str) -> str:
        return absolute_sqlite(uri)


def open_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created (artifacts beside a sqlite database, the model-training
    kind) when it does not exist."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(
        name, artifact_location=artifact_location(client.tracking_uri), tags=MODEL_TRAINING)


def end_killed_runs(client: MlflowClient, experiment_id: str, kind: str) -> None:
    """Runs of `kind` left RUNNING by a process killed outright (SIGKILL, a lost machine: no handler ran)
    end KILLED, so that the UI shows only the live ones running. Only runs whose process is known gone
    (TAG_OWNER) are touched; called before a new run of that kind starts."""
    query = f"tags.`{TAG_KIND}` = '{kind}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment_id], query, max_results=1000):
        if is_gone(run.data.tags.get(TAG_OWNER, "")):
            log.warning("%s run %s was left running by a process that was killed: it ends KILLED", kind,
                        run.info.run_id)
            client.set_terminated(run.info.run_id, "KILLED")


def ui_url(tracking_uri: str, experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment's runs (model training view); `server`: where `mlflow ui`
    listens, when the tracking URI is not itself a server."""
    root = tracking_uri if tracking_uri.startswith(("http://", "https://")) else server
    return f"{root.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Params of any JSON value, encoded as TrainConfig's are (MLflow splits the batch itself)."""
    client.log_batch(run_id, params=[Param(k, param_text(v)) for k, v in params.items()])


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite database, in `mlartifacts/` (MLflow's
    default, ./mlruns of whatever directory the process runs in, would scatter them); a server decides
    for itself (None). The sweep and the soup stage create experiments the same way."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix):]).parent / "mlartifacts").as_uri()
    return None


def absolute_sqlite(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db: Tune and Ray jobs change directories."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


def check_tracking_uri(uri: str, timeout_s: float = ANSWER_TIMEOUT_S, existing: bool = False) -> None:
    """Before anything is created: a UserError (one line naming the URI) for a tracking URI MLflow would
    refuse with a traceback or retry for minutes: an unknown scheme, a server or database that does not
    answer within `timeout_s`, a file store MLflow 3 refuses, a sqlite file that cannot be created. A
    sqlite URI is checked on disk only (nothing is created, nothing waits); `existing`: the command only
    reads what a sweep recorded, so a sqlite file that is not there is a wrong path (MLflow would create
    an empty database there and then not find the experiment)."""
    try:
        _tracking_store_registry.get_store_builder(uri)  # MLflow's own lookup, plugins included
    except UnsupportedModelRegistryStoreURIException as err:
        schemes = ", ".join(f"{s}:" for s in err.supported_uri_schemes if s)
        raise UserError(f"MLflow tracking URI {uri!r}: unknown scheme {get_uri_scheme(uri)!r}; use one of "
                        f"{schemes} (e.g. sqlite:////abs/path/mlflow.db or http://host:5000)") from None
    scheme = get_uri_scheme(uri) if uri not in NAMED_STORES else uri
    if scheme in ("http", "https"):
        _check_server_answers(uri, timeout_s)
    elif scheme in DATABASE_PORTS:
        _check_database_answers(uri, scheme, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite_file(uri, existing, timeout_s)
    elif scheme in ("", "file") and not MLFLOW_ALLOW_FILE_STORE.get():
        raise UserError(f"MLflow tracking URI {uri!r} is a file store, which MLflow 3 refuses: use "
                        f"sqlite:///{os.path.abspath(uri.removeprefix('file://'))}.db (or set MLFLOW_ALLOW_FILE_STORE=true)")


def _check_server_answers(uri: str, timeout_s: float) -> None:
    """One MLflow API call without retries (MLflow's own client retries for minutes)."""
    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                                max_retries=0, timeout=timeout_s, raise_on_status=False, params={"max_results": 1})
    except MlflowException as err:
        found = re.search(r"\[Errno -?\d+\] ([^'\")]+)|(timed out)", str(err))
        reason = (found.group(1) or found.group(2)) if found else str(err).splitlines()[0][:200]
        raise UserError(f"MLflow tracking server {uri} does not answer within {timeout_s:g} s ({reason}); start "
                        "it (mlflow server --host ... --port ...) or give the tracking URI of a running one") from None
    if response.status_code != 200:
        raise UserError(f"{uri} answered HTTP {response.status_code} to an MLflow API call: not an MLflow tracking "
                        "server, or it refused access (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)")


def _check_database_answers(uri: str, scheme: str, timeout_s: float) -> None:
    url = make_url(uri)
    address = (url.host or "localhost", url.port or DATABASE_PORTS[scheme])
    try:
        socket.create_connection(address, timeout=timeout_s).close()
    except OSError as err:
        raise UserError(f"the MLflow database of {url.render_as_string(hide_password=True)} does not answer at "
                        f"{address[0]}:{address[1]} within {timeout_s:g} s ({err.strerror or err}); start it or "
                        "fix the tracking URI") from None


def _check_sqlite_file(uri: str, existing: bool, timeout_s: float) -> None:
    """The database file exists and can be written within `timeout_s` (no other process holds its lock),
    or (unless `existing`) its nearest existing folder is a folder we can write in."""
    database = Path(make_url(uri).database or "")
    if existing and not database.exists():
        raise UserError(f"MLflow tracking URI {uri}: there is no database at {database}; pass the --tracking-uri "
                        "the sweep printed (on its 'redo the soup stage' line)")
    if database.exists():
        if not database.is_file() or database.stat().st_size and not _has_sqlite_header(database):
            raise UserError(f"MLflow tracking URI {uri}: {database} is not a sqlite database; give the "
                            "database the sweep wrote, or a new file name")
        _check_sqlite_unlocked(uri, database, timeout_s)
        return
    folder = unwritable_folder(database.parent)
    if folder is not None:
        raise UserError(f"MLflow tracking URI {uri}: cannot create {database}, {folder} is not a writable "
                        "folder; give a sqlite path in a folder you can write")


def _check_sqlite_unlocked(uri: str, database: Path, timeout_s: float) -> None:
    """Take and release the write lock (nothing is written): MLflow would fail its first write with a
    traceback of `database is locked` after waiting, often once the work is done."""
    connection = sqlite3.connect(database, timeout=timeout_s)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    except sqlite3.OperationalError as err:
        if "locked" not in str(err):
            raise UserError(f"MLflow tracking URI {uri}: {database} cannot be written ({err}); give a database "
                            "you can write") from None
        raise UserError(f"MLflow tracking URI {uri}: {database} stayed locked by another process for "
                        f"{timeout_s:g} s ({err}); end the process that holds it (an open sqlite3 shell, a "
                        "stuck writer) and run again") from None
    finally:
        connection.close()


def _has_sqlite_header(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(16) == b"SQLite format 3\x00"
