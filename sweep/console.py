"""What a person sees while a sweep runs: one line per trial event, a progress bar, then the comparison.

Ray, Tune and the training workers write a great deal (Tune's status tables, every worker's reports,
the C++ core's warnings). Without --verbose all of it goes to a log file beside the sweep's results:
the process's own stdout and stderr (file descriptors 1 and 2, so native and child output follows) are
pointed at the file, and the sweep's own lines reach the terminal through the `sweep.console` logger,
whose handler writes to the original stdout (sweep.trial_events writes the trials' lines).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

from tqdm import tqdm

from trainers.architectures import quiet_open_clip  # noqa: F401 (imported from here too)
from trainers.uris import is_remote, local_path

CONSOLE = "sweep.console"  # the logger whose records are the console's lines
LOG_NAME = "console.log"
OWN_PACKAGES = ("sweep", "soup", "trainers")  # whose warnings and errors the console shows
say = logging.getLogger(CONSOLE).info


def log_file(sidecar: str, name: str) -> Path:
    """Where Ray's output goes: the sweep's own folder when its storage is local, else the working
    directory (a log file is written as it grows: object stores cannot append). A local folder that
    cannot be made also leaves the log in the working directory: the storage check that follows then
    says in one line what is wrong with the storage."""
    if not is_remote(sidecar):
        folder = local_path(sidecar)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder / LOG_NAME
        except OSError:
            pass
    return Path(f"{name}-{LOG_NAME}").resolve()


class ConsoleHandler(logging.Handler):
    """Writes console lines above a sweep progress bar (shown on a terminal only)."""

    def __init__(self, stream: TextIO, level: int = logging.INFO, form: str = "%(message)s"):
        super().__init__(level)
        self.setFormatter(logging.Formatter(form))
        self.stream = stream
        self.bar: tqdm | None = None

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, "progress", None)
        if progress is not None:
            self._update_bar(*progress)
            return
        tqdm.write(self.format(record), file=self.stream)
        self.stream.flush()

    def _update_bar(self, done: int, total: int, text: str) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit="trial", file=self.stream, disable=None, desc="sweep")
        self.bar.total = max(total, done)
        self.bar.n = done
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        super().close()


@contextlib.contextmanager
def sweep_console(path: Path, verbose: bool) -> Iterator[None]:
    """Inside: the console logger prints to the terminal; without `verbose`, everything else the
    process (and Ray's processes started inside) writes goes to `path`, whose name is printed first."""
    stream = sys.stdout if verbose else os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    handler = ConsoleHandler(stream)
    logger = logging.getLogger(CONSOLE)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = not verbose  # the log file gets the lines too (through the root logger's stderr)
    warnings = ConsoleHandler(stream, logging.WARNING, "warning: %(message)s")  # ours, also when Ray's are hidden
    own = [] if verbose else [logging.getLogger(name) for name in OWN_PACKAGES]
    for package in own:
        package.addHandler(warnings)
    try:
        with contextlib.nullcontext() if verbose else _redirected(path):
            if not verbose:
                say("Ray's and the workers' output: %s (--verbose prints it here)", path)
            yield
    finally:
        for package in own:
            package.removeHandler(warnings)
        logger.removeHandler(handler)
        handler.close()
        if not verbose:
            stream.close()


@contextlib.contextmanager
def _redirected(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 point at `path` (appended) inside, and back after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
