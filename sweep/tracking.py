"""MLflow runs of a sweep, written from the sweep driver only (one writer: no sqlite contention).

The sweep run is the parent; a Tune callback opens one child run per trial, logs its params and
per-epoch metrics as results arrive, closes it with the trial's status (a finished or stopped trial's
per-class report on the val split as an MLflow table), and keeps the parent's counts by status,
best-so-far and anytime soup current. On resume it finds the runs it opened before.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from soup.inputs.manifest import DIVERGED, FAILED, FINISHED, RUNNING, STOPPED, ended_status
from sweep.soup_actor import BEST_SINGLE, MEMBERS, OFFERED, REPORT_KEYS
from sweep.queued_writes import QueuedWrites, log_table_once
from sweep.space import resolve_overrides
from sweep.per_class import PER_CLASS_TABLE, kept_or_reported, kept_per_class_table, per_class_table
from sweep.train_storage import checkpoint_uri
from soup.inputs.records import KIND_TRIAL, TAG_PARENT, TAG_REASON, TAG_STATUS, TAG_STORAGE, TAG_TRIAL_ID, trial_runs
from trainers.tracking import TAG_CHECKPOINT, TAG_KIND, log_params
from trainers import metrics as M
from trainers.config import TrainConfig

log = logging.getLogger(__name__)

# The epoch is logged too: a resumed driver reads it back to tell a finished trial from a stopped one.
REPORTED = (M.EPOCH, M.TRAIN_LOSS, M.VAL_LOSS, M.VAL_TOP1, M.LR)
TAG_OFFER_ORDER = "soupsweep.offer_order"  # on a trial run: when the anytime soup was offered it
TAG_ANYTIME_MEMBERS = "soupsweep.anytime_members"  # on the sweep run: the running soup's trial ids
TAG_ANYTIME_BEST_SINGLE = "soupsweep.anytime_best_single"  # on the sweep run: the best trial offered so far
NO_ERROR_TEXT = ("failed without an error text: its process was probably killed (e.g. by the out-of-memory "
                 "killer); see the Ray logs (`ray logs` or the dashboard) of its workers")
FLUSH_PATIENCE_S = 300  # after the search, how long queued trial-run writes wait for an absent MLflow
MLFLOW_STATUS = {FINISHED: "FINISHED", STOPPED: "FINISHED", DIVERGED: "FAILED", FAILED: "FAILED"}


@dataclass
class TrialRecord:
    run_id: str
    overrides: dict[str, Any]
    planned_epochs: int
    status: str = RUNNING
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""  # URI of the last checkpoint reported


def close_interrupted_trials(client: MlflowClient, experiment_id: str, parent_run_id: str, reason: str) -> None:
    """After the search: trials Tune stopped without a completion event (the time budget ran out, or
    the anytime stopping rule) are marked stopped, or finished when they had logged their last epoch;
    they remain ingredients if they left a checkpoint, and get its per-class table (read here, after
    the search: nothing waits on it)."""
    for run in trial_runs(client, experiment_id, parent_run_id, RUNNING):
        reported = run.data.tags.get(TAG_CHECKPOINT)
        if reported:
            kept = kept_or_reported(reported)  # the tag names the ingredient, not a deleted checkpoint
            if kept != reported:
                client.set_tag(run.info.run_id, TAG_CHECKPOINT, kept)
            log_table_once(client, run.info.run_id, partial(per_class_table, kept), PER_CLASS_TABLE)
        planned = TrainConfig.from_params(run.data.params).optim.epochs
        status = ended_status(run.data.metrics.get(M.EPOCH, 0), planned)
        client.set_tag(run.info.run_id, TAG_STATUS, status)
        if status == STOPPED:
            client.set_tag(run.info.run_id, TAG_REASON, reason)
        client.set_terminated(run.info.run_id, MLFLOW_STATUS[status])


def trial_error_text(trial) -> str:
    """Tune's error text of a failed trial: read from the storage, else from the driver's own copy (the
    storage may be what failed), else NO_ERROR_TEXT."""
    try:
        text = trial.get_error()
    except OSError:
        text = None
    local = trial.error_file  # in the driver's staging folder, written before the storage copy
    if not text and local and Path(local).is_file():
        text = Path(local).read_text()
    return text or NO_ERROR_TEXT


class TrialRuns(tune.Callback):
    """Tune callback: one MLflow child run per trial, in the driver process."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, base: TrainConfig,
                 anytime_experiment: str | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id, self.base = (
            tracking_uri, experiment_id, parent_run_id, base)
        # Set when the sweep has an anytime soup: its trials' last results carry their offers and the
        # soup's state after each, so this callback never calls the soup actor (nor Ray).
        self.anytime_experiment = anytime_experiment
        # Queued: the Tune loop never waits on MLflow, and an outage of the server loses nothing.
        self.client = QueuedWrites(MlflowClient(tracking_uri))
        # Ray reports checkpoint paths without the storage's scheme (s3://, gs://): the sweep run has it.
        self.storage = self.client.get_run(parent_run_id).data.tags.get(TAG_STORAGE, "")
        self.trials: dict[str, TrialRecord] = self._existing_trials()

    def __reduce__(self):
        # Tune pickles its callbacks with the experiment (tuner.pkl); a restored sweep must rebuild
        # the records from MLflow, not reuse the state they had when the sweep started.
        return (type(self), (self.tracking_uri, self.experiment_id, self.parent_run_id, self.base,
                             self.anytime_experiment))

    def _existing_trials(self) -> dict[str, TrialRecord]:
        """Trial runs of this sweep from before a restart: a resumed trial keeps its run."""
        records = {}
        for run in trial_runs(self.client, self.experiment_id, self.parent_run_id):
            cfg = TrainConfig.from_params(run.data.params)
            records[run.data.tags[TAG_TRIAL_ID]] = TrialRecord(
                run.info.run_id, {}, cfg.optim.epochs, run.data.tags.get(TAG_STATUS, RUNNING),
                run.data.tags.get(TAG_REASON, ""), dict(run.data.metrics), run.data.tags.get(TAG_CHECKPOINT, ""))
        return records

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.trials:  # restarted or resumed: same run
            record = self.trials[trial.trial_id]
            record.overrides = resolve_overrides(trial.config)
            if record.status == FAILED:  # an errored trial that a resumed sweep runs again
                self._reopen(record)
            return
        tags = {TAG_KIND: KIND_TRIAL, TAG_PARENT: self.parent_run_id, TAG_TRIAL_ID: trial.trial_id,
                TAG_STATUS: RUNNING}
        run_id = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.trial_id}", tags=tags)
        overrides = resolve_overrides(trial.config)
        cfg = self.base.with_overrides(overrides)
        log_params(self.client, run_id, cfg.to_params())
        self.trials[trial.trial_id] = TrialRecord(run_id, overrides, cfg.optim.epochs)
        self._stamp(run_id, "scheduled")
        self._update_parent()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        record = self.trials[trial.trial_id]
        if OFFERED in result:  # the trial's last result: what the anytime soup made of it
            self._log_offer(record, result)
            return
        step, now = int(result.get(M.EPOCH, 0)), int(time.time() * 1000)
        values = {k: float(result[k]) for k in REPORTED if k in result}
        record.metrics.update(values | {M.EPOCH: step, M.DIVERGED: float(result.get(M.DIVERGED, 0.0))})
        values |= {k: float(v) for k, v in result.items() if k.startswith(M.TIMELINE)}  # the phase stamps
        if not result.get(M.DIVERGED):
            self.client.log_batch(record.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        if result.get("checkpoint_path"):
            record.checkpoint = checkpoint_uri(self.storage, result["checkpoint_path"])
            self.client.set_tag(record.run_id, TAG_CHECKPOINT, record.checkpoint)
        self._update_parent()

    def on_trial_complete(self, iteration, trials, trial, **info):
        record = self.trials.get(trial.trial_id)
        if record is not None:
            self._stamp(record.run_id, "trial_end")
        if record is None or record.status == FINISHED:
            # FINISHED already: the driver died after the trial ended but before Tune saved that; the
            # resumed trial found its last checkpoint complete and reported nothing new.
            return
        epoch = int(record.metrics.get(M.EPOCH, 0))
        if record.metrics.get(M.DIVERGED):
            self._close(record, DIVERGED, f"training loss went non-finite at epoch {epoch}")
            return
        if record.checkpoint:
            # Queued before the status, so a run marked finished has its table. Given as a function,
            # meta.json is read on the writer thread: a slow or unreachable storage delays only the
            # MLflow writes behind it, never Tune; an unreadable one leaves the table out with a warning.
            self.client.log_table(record.run_id, partial(kept_per_class_table, record.checkpoint), PER_CLASS_TABLE)
        status = ended_status(epoch, record.planned_epochs)
        reason = f"stopped early at epoch {epoch} of {record.planned_epochs}" if status == STOPPED else ""
        self._close(record, status, reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        record = self.trials.get(trial.trial_id)
        if record is not None:
            self._close(record, FAILED, trial_error_text(trial)[-2000:])

    def on_experiment_end(self, trials, **info):
        """Tune is done (or stopped): write what an MLflow outage held back before the driver goes on."""
        if not self.client.flush(FLUSH_PATIENCE_S):
            log.error("MLflow at %s did not answer for %d s after the search ended: %d writes to the trial runs "
                      "are not recorded (run statuses and metrics may be incomplete). Nothing trained is lost: "
                      "the checkpoints are in the sweep's Ray storage", self.tracking_uri, FLUSH_PATIENCE_S,
                      self.client.pending())

    def _stamp(self, run_id: str, phase: str) -> None:
        """A trial's phase as the driver sees it (Tune starts it, it ends) as a timeline/* metric, beside
        those its trial function and workers report (docs/benchmarks.md)."""
        now = time.time()
        self.client.log_batch(run_id, metrics=[Metric(f"{M.TIMELINE}{phase}", now, int(now * 1000), 0)])

    def _close(self, record: TrialRecord, status: str, reason: str = "") -> None:
        record.status, record.reason = status, reason
        self.client.set_tag(record.run_id, TAG_STATUS, status)
        if reason:
            self.client.set_tag(record.run_id, TAG_REASON, reason[-5000:])
        self.client.set_terminated(record.run_id, MLFLOW_STATUS[status])
        self._update_parent()

    def _reopen(self, record: TrialRecord) -> None:
        record.status, record.reason = RUNNING, ""
        self.client.set_tag(record.run_id, TAG_STATUS, RUNNING)
        self.client.set_tag(record.run_id, TAG_REASON, "")
        self.client.update_run(record.run_id, "RUNNING")
        self._update_parent()

    def _log_offer(self, record: TrialRecord, result: dict) -> None:
        """The trial's soup gain on its run; the soup's state right after its offer on the sweep run
        (both from the trial's soup result: see sweep.soup_actor.offer_to_soup)."""
        now = int(time.time() * 1000)
        metrics = [Metric(M.SOUP_GAIN, float(result[M.SOUP_GAIN]), now, 0)] + [
            Metric(k, float(v), now, 0) for k, v in result.items() if k.startswith(M.TIMELINE)]  # fit_end
        if not result[OFFERED] or self.anytime_experiment is None:
            self.client.log_batch(record.run_id, metrics=metrics)
            return
        order = int(result[REPORT_KEYS["order"]])
        metrics.append(Metric(REPORT_KEYS["accepted"], float(result[REPORT_KEYS["accepted"]]), now, 0))
        self.client.log_batch(record.run_id, metrics=metrics)
        self.client.set_tag(record.run_id, TAG_OFFER_ORDER, str(order))
        values = {name: float(result[REPORT_KEYS[field]]) for name, field in (
            ("soup_heldout", "soup_heldout"), ("best_single_heldout", "best_single_heldout"), ("size", "soup_size"))}
        self.client.log_batch(self.parent_run_id, metrics=[  # nan (no trial evaluated yet) is left out
            Metric(f"anytime/{name}", value, now, order + 1) for name, value in values.items() if value == value])
        self.client.set_tag(self.parent_run_id, TAG_ANYTIME_MEMBERS, str(result[MEMBERS]))
        self.client.set_tag(self.parent_run_id, TAG_ANYTIME_BEST_SINGLE, str(result[BEST_SINGLE]))

    def _update_parent(self) -> None:
        """Counts by status and the best validation accuracy so far, on the sweep run."""
        now = int(time.time() * 1000)
        statuses = [r.status for r in self.trials.values()]
        values = {f"trials_{s}": float(statuses.count(s)) for s in (RUNNING, FINISHED, STOPPED, DIVERGED, FAILED)}
        scores = [r.metrics[M.VAL_TOP1] for r in self.trials.values()
                  if M.VAL_TOP1 in r.metrics and not r.metrics.get(M.DIVERGED)]
        if scores:
            values[f"best/{M.VAL_TOP1}"] = max(scores)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
