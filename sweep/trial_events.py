"""The trials' lines on the sweep's console (sweep.console): started, ended, offered to the anytime soup."""
from __future__ import annotations

import logging

from ray import tune

from sweep.soup_actor import OFFERED, REPORT_KEYS
from sweep.console import CONSOLE, say
from sweep.space import resolve_overrides
from trainers import metrics as M


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
                size = int(result[REPORT_KEYS["soup_size"]])
                say("trial %s offered to the anytime soup: %s; soup held-out %.1f%% with %d member%s", trial.trial_id,
                    kept, 100 * result[REPORT_KEYS["soup_heldout"]], size, "" if size == 1 else "s")
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
