"""The sweep driver: prepare once, run (or resume) the Tune experiment, write the manifest, make soups.

Everything the soup stage needs is recorded before Tune starts (sweep run tags, the config as an
artifact) or right after it ends (the manifest), so `python -m soup.greedy --experiment <name>` can
redo the soup at any time and `python -m sweep.run --resume <name>` can continue a killed sweep.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from soup.inputs.manifest import Ingredient, write_manifest
from soup.pipeline import SoupRun, soup_experiment
from soup.inputs.records import (TAG_BASE, TAG_BASE_CHECKSUM, TAG_MANIFEST, TAG_STORAGE, TAG_TRIAL_ID, find_experiment,
                                 require_sweep_run, trial_runs)
from trainers.tracking import check_tracking_uri
from sweep.cluster import check_local_storage, check_storage_writable, connect_ray, trial_concurrency
from sweep.soup_actor import SoupPlateau, start_anytime_actor, stop_reason
from sweep.config import SoupSection, SweepConfig
from sweep.console import log_file, say, sweep_console
from sweep.trial_events import TrialConsole
from sweep.manifest import collect_ingredients
from sweep.recovery import backfill_checkpoint_epochs, remove_orphan_checkpoints
from sweep.storage_faults import retry_write
from sweep.space import param_space, scheduler, search_algorithm
from sweep.sweep_run import open_sweep_run, require_new_sweep, require_unused_storage
from sweep.tracking import TAG_OFFER_ORDER, TrialRuns, close_interrupted_trials
from sweep.train_storage import final_checkpoint
from sweep.trial import TrialSpec, run_trial, train_env
from trainers.architectures import check_model_name
from trainers.base import check_pretrained_weights, write_base_checkpoint
from trainers.baselines import training_free_baselines
from trainers.checkpoint import upload_checkpoint
from trainers.data.store import check_dataset
from trainers.device import resolve_device
from trainers.errors import UserError
from trainers.uris import absolute, is_remote, local_path

log = logging.getLogger(__name__)
CONFIG_ARTIFACT = "sweep_config.json"
TAG_STOP_REASON = "soupsweep.stop_reason"


@dataclass
class SweepPaths:
    storage: str
    name: str

    @property
    def tune_dir(self) -> str:
        return f"{self.storage}/{self.name}"

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
    tracking_uri: str
    experiment_id: str
    sweep_run_id: str
    ingredients: list[Ingredient]
    soup: SoupRun
    soup_options: SoupSection  # the config's soup section: what the summary says was exported


def run_sweep(cfg: SweepConfig, verbose: bool = False) -> SweepOutcome:
    """Validate and prepare, sweep with Tune + Ray Train, record the trials, make the soups. Ray's
    output goes to a log file unless `verbose` (sweep.console)."""
    check_dataset(cfg.data)  # every split, before anything is created or written
    check_tracking_uri(cfg.mlflow.tracking_uri)
    check_model_name(cfg.model.name)  # open_clip can build it here (hf-hub: fetched, transformers there)
    check_pretrained_weights(cfg.model)
    check_local_storage(cfg.storage_path)
    name = cfg.experiment_name()
    paths = SweepPaths(cfg.storage_path, name)
    require_unused_storage(cfg.storage_path, name, paths.tune_dir, paths.manifest)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    require_new_sweep(client, name)
    with sweep_console(log_file(paths.sidecar, name), verbose), connect_ray() as local_cluster:
        check_storage_writable(cfg.storage_path)
        concurrency = trial_concurrency(cfg)
        checksum = prepare_base(cfg, paths)
        tags = {TAG_STORAGE: cfg.storage_path, TAG_MANIFEST: paths.manifest, TAG_BASE: paths.base,
                TAG_BASE_CHECKSUM: checksum}
        experiment_id, sweep_run_id = open_sweep_run(client, name, tags, cfg.to_params())
        client.log_dict(sweep_run_id, cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
        say("MLflow experiment %r (id %s) at %s", name, experiment_id, cfg.mlflow.tracking_uri)
        for warning in cfg.warnings():
            say("warning: %s", warning)
        callback = TrialRuns(cfg.mlflow.tracking_uri, experiment_id, sweep_run_id, cfg.train_config(),
                             name if cfg.anytime.enabled else None)
        anytime = start_anytime(cfg, paths)
        tuner = tune.Tuner(
            trainable(cfg, paths, local_cluster),
            param_space=param_space(cfg.search),
            tune_config=tune.TuneConfig(
                num_samples=cfg.search.num_samples, search_alg=search_algorithm(cfg.search, concurrency),
                scheduler=scheduler(cfg.search, max_epochs(cfg)), time_budget_s=cfg.search.time_budget_s,
                reuse_actors=cfg.search.reuses_actors()),
            run_config=tune.RunConfig(name=paths.name, storage_path=cfg.storage_path, callbacks=[callback, TrialConsole(cfg.search.num_samples, cfg.optim.epochs)],
                                      stop=SoupPlateau(cfg.anytime.stop_after) if cfg.anytime.stop_after else None,
                                      verbose=1),
        )
        return finish(cfg, client, experiment_id, sweep_run_id, paths, tuner, anytime)


def resume_sweep(tracking_uri: str, experiment: str, verbose: bool = False) -> SweepOutcome:
    """Continue a sweep whose driver died: same Tune experiment, same MLflow runs; finished trials
    are not trained again, interrupted ones resume from their last checkpoint."""
    check_tracking_uri(tracking_uri, existing=True)
    client = MlflowClient(tracking_uri)
    found = find_experiment(client, experiment)
    sweep_run = require_sweep_run(client, found)
    cfg = SweepConfig.model_validate(json.loads(
        Path(client.download_artifacts(sweep_run.info.run_id, CONFIG_ARTIFACT)).read_text()))
    cfg.mlflow.tracking_uri = tracking_uri  # where the user found it now
    # absolute(): sweeps recorded before the default storage_path was made absolute kept it relative
    paths = SweepPaths(absolute(sweep_run.data.tags[TAG_STORAGE]), found.name)
    if not tune.Tuner.can_restore(paths.tune_dir):
        raise UserError(f"--resume {experiment}: the sweep's Tune folder {paths.tune_dir} is gone or holds no "
                        "Tune experiment, so there is nothing to continue; run a new sweep (another "
                        "mlflow.experiment), or redo its soup with python -m soup.greedy")
    with sweep_console(log_file(paths.sidecar, found.name), verbose), connect_ray() as local_cluster:
        backfill_checkpoint_epochs(client, found.experiment_id, sweep_run.info.run_id, paths.storage, paths.name)
        remove_orphan_checkpoints(paths.storage, paths.name)
        anytime = start_anytime(cfg, paths)
        if anytime is not None:
            replay_offers(client, found.experiment_id, sweep_run.info.run_id, paths, anytime)
        tuner = tune.Tuner.restore(paths.tune_dir, trainable(cfg, paths, local_cluster), resume_unfinished=True,
                                   resume_errored=True)
        # only now: a resume that fails before this leaves the sweep run as it was (KILLED, FAILED)
        client.update_run(sweep_run.info.run_id, "RUNNING")
        return finish(cfg, client, found.experiment_id, sweep_run.info.run_id, paths, tuner, anytime)


def finish(cfg: SweepConfig, client: MlflowClient, experiment_id: str, sweep_run_id: str, paths: SweepPaths,
           tuner: tune.Tuner, anytime=None) -> SweepOutcome:
    """Run the Tuner, write the manifest, run the soup stage; the sweep run ends FINISHED or FAILED."""
    try:
        tuner.fit()
        summary = ray.get(anytime.summary.remote()) if anytime is not None else None
        reason = (summary and stop_reason(summary, cfg.anytime.stop_after)) or ""
        client.set_tag(sweep_run_id, TAG_STOP_REASON, reason or "the search ended (search.num_samples or "
                       "search.time_budget_s)")
        close_interrupted_trials(client, experiment_id, sweep_run_id,
                                 reason or "stopped early when the search ended (search.time_budget_s)")
        ingredients = collect_ingredients(client, experiment_id, sweep_run_id, paths.storage, paths.name)
        retry_write(lambda: write_manifest(paths.manifest, ingredients), paths.manifest, paths.sidecar,
                    cfg.resources.storage_patience_s,
                    f"python -m sweep.run --resume {paths.name} --tracking-uri {cfg.mlflow.tracking_uri}")
        say("search done (%s); soup stage on %d trials", reason or "all trials ended", len(ingredients))
        soup = soup_experiment(cfg.mlflow.tracking_uri, experiment_id, **soup_options(cfg, summary))
    except BaseException:
        client.set_terminated(sweep_run_id, "FAILED")
        raise
    client.set_terminated(sweep_run_id, "FINISHED")
    return SweepOutcome(paths.name, cfg.mlflow.tracking_uri, experiment_id, sweep_run_id, ingredients, soup, cfg.soup)


def soup_options(cfg: SweepConfig, anytime_summary: dict | None) -> dict:
    """The sweep's soup section, and the anytime soup for the greedy soup to start from."""
    options = cfg.soup.model_dump()
    if anytime_summary and anytime_summary["members"]:
        options["greedy_start"] = {"members": anytime_summary["members"], "trace": anytime_summary["trace"]}
    return options


def start_anytime(cfg: SweepConfig, paths: SweepPaths):
    """The anytime soup's actor when the sweep keeps one (after the base is written), else None."""
    if not cfg.anytime.enabled:
        return None
    return start_anytime_actor(paths.name, paths.base, cfg.soup.tie_rule, cfg.soup.init_tolerance, cfg.anytime.gpus)


def replay_offers(client: MlflowClient, experiment_id: str, sweep_run_id: str, paths: SweepPaths, anytime) -> None:
    """After a restart, offer the trials the anytime soup had seen again, in their recorded order."""
    offered = [r for r in trial_runs(client, experiment_id, sweep_run_id) if TAG_OFFER_ORDER in r.data.tags]
    for run in sorted(offered, key=lambda r: int(r.data.tags[TAG_OFFER_ORDER])):
        trial_id = run.data.tags[TAG_TRIAL_ID]
        checkpoint = final_checkpoint(paths.storage, paths.name, trial_id)
        if checkpoint:
            ray.get(anytime.offer.remote(trial_id, checkpoint))
    log.info("anytime soup: replayed %d trials offered before the restart", len(offered))


def prepare_base(cfg: SweepConfig, paths: SweepPaths) -> str:
    """Write the shared initialisation once, where every worker can read it, with the training-free
    baselines beside it (baselines.enabled); returns its checksum."""
    with tempfile.TemporaryDirectory(prefix="soupsweep-base-") as tmp:
        remote = is_remote(paths.base)
        local = Path(tmp) / "base" if remote else local_path(paths.base)
        checksum = write_base_checkpoint(cfg.train_config(), local,
                                         extras=write_baselines(cfg) if cfg.baselines.enabled else None)
        upload_checkpoint(local, paths.base)  # a no-op when the base is already where it belongs
    return checksum


def write_baselines(cfg: SweepConfig) -> Callable[[Path], None]:
    """Writes the training-free baselines into the base directory being written (digested with it)."""
    def write(directory: Path) -> None:
        log.info("computing the training-free baselines (zero-shot, Tip-Adapter) once for the sweep")
        training_free_baselines(cfg.train_config(), resolve_device("auto"), cfg.baselines.tip_shots).save(directory)
    return write


def trainable(cfg: SweepConfig, paths: SweepPaths, local_cluster: bool):
    res = cfg.resources
    spec = TrialSpec(base_config=cfg.train_config().model_dump(mode="json"), base_dir=paths.base,
                     storage_path=cfg.storage_path, experiment=paths.name, workers=res.workers,
                     cpus_per_worker=res.cpus_per_worker, gpus_per_worker=res.gpus_per_worker,
                     max_failures=res.max_failures, storage_patience_s=res.storage_patience_s,
                     anytime=cfg.anytime.enabled, objective=cfg.search.objective,
                     train_env=train_env(local_cluster))
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec), {"cpu": res.driver_cpus})


def max_epochs(cfg: SweepConfig) -> int:
    """The most epochs any trial can ask for (ASHA's max_t)."""
    domain = cfg.search.space.get("optim.epochs")
    return int(max(domain.extremes())) if domain else cfg.optim.epochs
