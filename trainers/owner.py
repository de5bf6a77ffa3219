"""Which process owns something it is still writing (a staging directory, an open MLflow run), and
whether that process is gone: what lets a re-run clean up after one killed by SIGKILL, which runs no
handler. An owner is `pid@host`; only the host that wrote it can tell, so another host's is never
called gone (on shared storage it may still be running)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Iterable, Iterator


def this_process() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def is_gone(owner: str) -> bool:
    """True when `owner` names a process of this host that no longer exists."""
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def staging_name(name: str) -> str:
    """The temporary sibling a directory `name` is written into before it is renamed into place."""
    return f".{name}.partial-{this_process()}"


def left_by_killed(entries: Iterable[str], name: str) -> list[str]:
    """The staging names for `name` among a folder's `entries` whose process is gone (killed before it
    could remove its own): what the next writer of `name` removes, so nothing half-written stays."""
    prefix = f".{name}.partial-"
    owners = {e: e.removeprefix(prefix) for e in entries if e.startswith(prefix)}
    # this process's own name: left by an earlier process that had its PID (nothing is in progress yet)
    return [e for e, owner in owners.items() if is_gone(owner) or owner == this_process()]


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A new directory to fill, renamed to `target` (which must not exist) once the block ends; removed
    if the block raises. One left by a killed process is removed first."""
    for stale in left_by_killed(os.listdir(target.parent), target.name):
        shutil.rmtree(target.parent / stale, ignore_errors=True)
    tmp = target.parent / staging_name(target.name)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, target)  # fails when `target` appeared meanwhile and is not an empty directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def exit_on_sigterm() -> None:
    """SIGTERM (`kill PID`, a scheduler's stop) ends the process as Ctrl-C does: through the handlers that
    end its MLflow run FAILED and remove what it was writing (Python's default would skip them)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
