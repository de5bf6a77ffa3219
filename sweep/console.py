"""What a person sees while a sweep runs: one line per trial event, a progress bar, then the comparison.

Ray, Tune and the training workers write a great deal (Tune's status tables, every worker's reports,
the C++ core's warnings). Without --verbose all of it goes to a log file beside the sweep's results:
the process's own stdout and stderr (file descriptors 1 and 2, so native and child output follows) are
pointed at the file, and the sweep's own lines reach the terminal through the `sweep.console` logger,
whose handler writes to the original stdout.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

from ray import tune
from tqdm import tqdm

from sweep.anytime import OFFERED, REPORT_KEYS
from sweep.space import resolve_overrides
from trainers import metrics as M

CONSOLE = "sweep.console"  # the logger whose records are the console's lines
LOG_NAME = "console.log"
say = logging.getLogger(CONSOLE).info


def log_file(sidecar: str, name: str) -> Path:
    """Where Ray's output goes: the sweep's own folder when its storage is local, else the working
    directory (a log file is written as it grows: object stores cannot append)."""
    if "://" in sidecar and not sidecar.startswith("file://"):
        return Path(f"{name}-{LOG_NAME}").resolve()
    return Path(sidecar.removeprefix("file://")) / LOG_NAME


class ConsoleHandler(logging.Handler):
    """Writes console lines above a sweep progress bar (shown on a terminal only)."""

    def __init__(self, stream: TextIO):
        super().__init__(logging.INFO)
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
    with contextlib.ExitStack() as stack:
        stack.callback(logger.removeHandler, handler)
        stack.callback(handler.close)
        if not verbose:
            say("Ray's and the workers' output: %s (--verbose prints it here)", path)
            stack.enter_context(_redirected(path))
            stack.callback(stream.close)
        yield


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


class TrialConsole(tune.Callback):
    """Tune callback: a console line when a trial starts, ends and meets the anytime soup; the
    progress bar follows the epochs. Holds no stream (Tune pickles its callbacks)."""

    def __init__(self, planned_trials: int, base_epochs: int):
        self.planned_trials, self.base_epochs = planned_trials, base_epochs
        self.last: dict[str, tuple[int, float]] = {}  # trial id -> (epoch, val top-1)
        self.ended: set[str] = set()

    def on_trial_start(self, iteration, trials, trial, **info):
        overrides = resolve_overrides(trial.config)
        shown = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in overrides.items())
        say("trial %s started: %s", trial.trial_id, shown)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if OFFERED in result:
            if result[OFFERED]:
                kept = "kept" if result[REPORT_KEYS["accepted"]] else "not kept"
                say("trial %s offered to the anytime soup: %s; soup held-out %.1f%% with %d members", trial.trial_id,
                    kept, 100 * result[REPORT_KEYS["soup_heldout"]], result[REPORT_KEYS["soup_size"]])
            return
        epoch, val = int(result.get(M.EPOCH, 0)), float(result.get(M.VAL_TOP1, float("nan")))
        self.last[trial.trial_id] = (epoch, val)
        text = f"trial {trial.trial_id} epoch {epoch}/{self._planned(trial)} val top-1 {100 * val:.1f}%"
        logging.getLogger(CONSOLE).info(text, extra={"progress": (len(self.ended), self.planned_trials, text)})

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch, val = self.last.get(trial.trial_id, (0, float("nan")))
        planned = self._planned(trial)
        how = "finished" if epoch >= planned else "stopped early by the scheduler at"
        self._ended(trial, f"{how} epoch {epoch}/{planned}, val top-1 {100 * val:.1f}%")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = (trial.get_error() or "no error text (its process was probably killed)").strip().splitlines()
        self._ended(trial, f"failed: {error[-1][:200]}")

    def _ended(self, trial, text: str) -> None:
        self.ended.add(trial.trial_id)
        say("trial %s %s", trial.trial_id, text)
        logging.getLogger(CONSOLE).info("%d of %d trials ended", len(self.ended), self.planned_trials,
                                        extra={"progress": (len(self.ended), self.planned_trials, "")})

    def _planned(self, trial) -> int:
        return int(resolve_overrides(trial.config).get("optim.epochs", self.base_epochs))


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
