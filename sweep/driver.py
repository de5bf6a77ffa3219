"""The sweep driver: prepare once, run the Tune experiment, write the manifest, run the soup stage.

Everything the soup stage needs is recorded before Tune starts (sweep run tags) or right after it
ends (the manifest), so `python -m soup.greedy --experiment <name>` can redo the soup at any time.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from soup.ingredients import FAILED, FINISHED, Ingredient, write_manifest
from soup.pipeline import SoupRun, soup_experiment
from soup.records import TAG_BASE, TAG_BASE_CHECKSUM, TAG_MANIFEST, TAG_STORAGE
from sweep.config import SweepConfig
from sweep.space import SEARCH_METRIC, SEARCH_MODE, param_space, search_algorithm
from sweep.tracking import TrialRecord, TrialRuns, open_sweep_run, require_new_sweep
from sweep.trial import TrialSpec, run_trial, train_run_name
from trainers.base import write_base_checkpoint
from trainers.checkpoint import read_meta, upload_checkpoint
from trainers.data.store import check_dataset
from trainers.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SweepPaths:
    storage: str
    name: str

    @property
    def sidecar(self) -> str:  # our files beside Tune's experiment folder
        return f"{self.storage}/{self.name}-soupsweep"

    @property
    def base(self) -> str:
        return f"{self.sidecar}/base"

    @property
    def manifest(self) -> str:
        return f"{self.sidecar}/ingredients.parquet"


@dataclass
class SweepOutcome:
    experiment: str
    experiment_id: str
    sweep_run_id: str
    ingredients: list[Ingredient]
    soup: SoupRun


def run_sweep(cfg: SweepConfig) -> SweepOutcome:
    """Validate and prepare, sweep with Tune + Ray Train, record the trials, make the soups."""
    check_dataset(cfg.data)  # every split, before anything is created or written
    name = cfg.experiment_name()
    paths = SweepPaths(cfg.storage_path, name)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    require_new_sweep(client, name)  # before anything is written
    checksum = prepare_base(cfg, paths)
    tags = {TAG_STORAGE: cfg.storage_path, TAG_MANIFEST: paths.manifest, TAG_BASE: paths.base,
            TAG_BASE_CHECKSUM: checksum}
    experiment_id, sweep_run_id = open_sweep_run(client, name, tags, cfg.to_params())
    started_ray = False
    try:
        started_ray = connect_ray()
        concurrency = trial_concurrency(cfg)
        callback = TrialRuns(client, experiment_id, sweep_run_id, cfg.train_config())
        make_tuner(cfg, paths, checksum, concurrency, callback).fit()
        ingredients = collect_ingredients(callback.trials, paths, cfg.storage_path)
        write_manifest(paths.manifest, ingredients)
        log_counts(client, sweep_run_id, ingredients)
        soup = soup_experiment(cfg.mlflow.tracking_uri, experiment_id, cfg.soup.methods, cfg.soup.tie_rule,
                               cfg.soup.device)
    except BaseException:
        client.set_terminated(sweep_run_id, "FAILED")
        raise
    finally:
        if started_ray:
            ray.shutdown()
    client.set_terminated(sweep_run_id, "FINISHED")
    return SweepOutcome(name, experiment_id, sweep_run_id, ingredients, soup)


def prepare_base(cfg: SweepConfig, paths: SweepPaths) -> str:
    """Write the shared initialisation once, where every worker can read it; returns its checksum."""
    if "://" not in paths.base:
        return write_base_checkpoint(cfg.train_config(), paths.base)
    with tempfile.TemporaryDirectory(prefix="soupsweep-base-") as tmp:
        checksum = write_base_checkpoint(cfg.train_config(), Path(tmp) / "base")
        upload_checkpoint(Path(tmp) / "base", paths.base)
    return checksum


def connect_ray() -> bool:
    """Attach to RAY_ADDRESS or a cluster started with `ray start`, else start a local one.
    Returns whether we started it (and so should shut it down)."""
    if ray.is_initialized():
        return False
    context = ray.init()
    log.info("Ray cluster at %s (dashboard %s): %s", ray.get_runtime_context().gcs_address,
             context.dashboard_url or "off", ray.cluster_resources())
    return True


def trial_concurrency(cfg: SweepConfig) -> int:
    """How many trials run at once: what the cluster fits, capped by search.max_concurrent_trials.
    Fails early when one trial does not fit at all (Tune would otherwise wait forever)."""
    need, have = cfg.resources.per_trial(), ray.cluster_resources()
    fits = []
    for kind, amount in need.items():
        if amount <= 0:
            continue
        if have.get(kind, 0) < amount:
            raise UserError(f"resources: a trial needs {amount:g} {kind} (driver + {cfg.resources.workers} "
                            f"workers) but the Ray cluster has {have.get(kind, 0):g}; lower "
                            "resources.workers / cpus_per_worker / gpus_per_worker (fractions work)")
        fits.append(math.floor(have[kind] / amount + 1e-9))
    return min([*fits, cfg.search.max_concurrent_trials or cfg.search.num_samples])


def make_tuner(cfg: SweepConfig, paths: SweepPaths, checksum: str, concurrency: int, callback: TrialRuns) -> tune.Tuner:
    res = cfg.resources
    spec = TrialSpec(base_config=cfg.train_config().model_dump(mode="json"), base_dir=paths.base,
                     storage_path=cfg.storage_path, experiment=paths.name, workers=res.workers,
                     cpus_per_worker=res.cpus_per_worker, gpus_per_worker=res.gpus_per_worker,
                     max_failures=res.max_failures)
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec), {"cpu": res.driver_cpus})
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg.search),
        tune_config=tune.TuneConfig(num_samples=cfg.search.num_samples, metric=SEARCH_METRIC, mode=SEARCH_MODE,
                                    search_alg=search_algorithm(cfg.search, concurrency)),
        run_config=tune.RunConfig(name=paths.name, storage_path=cfg.storage_path, callbacks=[callback],
                                  verbose=1),
    )


def collect_ingredients(trials: dict[str, TrialRecord], paths: SweepPaths, storage: str) -> list[Ingredient]:
    """One manifest row per trial: its status, final checkpoint and the checksum its meta.json states."""
    rows = []
    for trial_id, record in trials.items():
        row = Ingredient(trial_id, record.status, mlflow_run_id=record.run_id, reason=record.error[-500:],
                         config=record.overrides, metrics=record.metrics)
        checkpoint = final_checkpoint(storage, train_run_name(paths.name, trial_id))
        if checkpoint:
            row.checkpoint = checkpoint
            row.base_checksum = read_meta(checkpoint)["base_checksum"]
        elif row.status == FINISHED:
            row.status, row.reason = FAILED, "finished without a checkpoint"
        rows.append(row)
    return rows


def final_checkpoint(storage: str, run_name: str) -> str | None:
    """URI of the checkpoint Ray Train kept for a run (the last epoch), or None."""
    try:
        result = ray.train.Result.from_path(f"{storage}/{run_name}")
    except Exception:  # no run folder: the trial failed before Train started
        return None
    if result.checkpoint is None:
        return None
    scheme = storage.split("://")[0] + "://" if "://" in storage else ""
    return scheme + result.checkpoint.path


def log_counts(client: MlflowClient, run_id: str, ingredients: list[Ingredient]) -> None:
    counts = {"trials": len(ingredients), "trials_finished": sum(i.status == FINISHED for i in ingredients),
              "trials_failed": sum(i.status == FAILED for i in ingredients)}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in counts.items()])
