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
from typing import Iterator


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


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A new directory to fill, renamed to `target` (which must not exist) once the block ends; removed
    if the block raises. Its name, `.<target>.partial-<pid@host>`, lets the next call remove one left by
    a killed process, so a user's directory keeps nothing half-written."""
    prefix = f".{target.name}.partial-"
    for stale in target.parent.glob(prefix + "*"):
        if is_gone(stale.name.removeprefix(prefix)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / (prefix + this_process())
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
