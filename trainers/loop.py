"""The one training loop. Ray-free: the sweep's worker calls `fit` with a `RunContext` whose
`report` forwards to Ray Train; tests and single runs call it directly.

Per epoch: train on this rank's slice of a shared shuffle, evaluate on this rank's slice of val,
all-reduce the sums, write a checkpoint on rank 0, and report (every rank, same number of times).
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from trainers import metrics as M
from trainers.augment import mix, soft_targets
from trainers.base import load_start
from trainers.checkpoint import load_checkpoint, load_train_state, read_meta, save_checkpoint
from trainers.config import TrainConfig
from trainers.data.cache import CachedSet, load_eval_set
from trainers.data.loader import TrainLoader
from trainers.distributed import all_reduce_sum, rank_and_world, wrap_ddp
from trainers.errors import UserError
from trainers.evaluate import predict
from trainers.model import ImageClassifier
from trainers.sampling import BalancedTrainLoader
from trainers.step import Stepper, compile_for_training
from trainers.tasks import Task, make_task

log = logging.getLogger(__name__)
Reporter = Callable[[dict[str, float], "str | None"], None]


@dataclass
class RunContext:
    """Where a run starts from and where its results go."""

    base_dir: str  # checkpoint of the shared initialisation (base model + zero-shot head)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    report: Reporter = lambda metrics, checkpoint_dir: None  # every rank calls it once per epoch
    resume_dir: str | None = None  # a checkpoint of this run to continue from
    trial_id: str = ""
    # Wall-clock stamps of the run's phases (time.time(), and `train_s`: seconds in training steps),
    # filled as it goes; the sweep's worker reports them as timeline/* metrics (docs/benchmarks.md).
    timeline: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    model: ImageClassifier
    metrics: dict[str, float]


def fit(cfg: TrainConfig, ctx: RunContext) -> FitResult:
    """Train `cfg` from the base checkpoint (or resume), reporting metrics and checkpoints per epoch."""
    rank, world = rank_and_world()
    torch.manual_seed(cfg.seed * 1000 + rank)  # augmentation differs per rank, reproducibly
    start, base_meta = load_start(cfg, ctx.base_dir)
    ctx.timeline["base_loaded"] = time.time()
    model = start.classifier
    loader_type = BalancedTrainLoader if cfg.data.balanced_sampler else TrainLoader
    train_data = loader_type(cfg.data.train, cfg.aug, model.image_size, cfg.optim.batch_size, cfg.seed, ctx.device,
                             rank, world)  # this rank's slice of the shards, augmented on the device
    val_set = load_eval_set(cfg.data.val, model.image_size, ctx.device)  # decoded once, kept on the device
    ctx.timeline["data_ready"] = time.time()
    steps_per_epoch = train_data.steps_per_epoch
    if steps_per_epoch == 0:
        raise UserError(f"optim.batch_size: {cfg.optim.batch_size} images per worker × {world} workers "
                        f"is more than the {train_data.num_rows} training images; lower the batch size")
    task = make_task(start)
    task.module.to(ctx.device)
    runner = wrap_ddp(compile_for_training(task.module, cfg.model.compile), ctx.device)
    stepper = Stepper(task.module, runner, cfg.optim, cfg.precision, ctx.device, steps_per_epoch * cfg.optim.epochs)
    start_epoch = _resume(ctx.resume_dir, task, stepper)
    # every epoch's metrics so far, in each checkpoint's meta.json: a resumed sweep logs from it what a
    # killed driver never did (sweep.recovery)
    history: list[dict[str, float]] = read_meta(ctx.resume_dir).get("history", []) if ctx.resume_dir else []
    last: dict[str, float] = {}
    ctx.timeline.update(train_start=time.time(), train_s=0.0)
    for epoch in range(start_epoch, cfg.optim.epochs):
        began = time.time()
        train_loss = train_epoch(stepper, task, train_data, cfg, epoch, ctx.device)  # ends in a host sync
        ended = time.time()
        ctx.timeline.update(last_step=ended, train_s=ctx.timeline["train_s"] + ended - began)
        last = {M.EPOCH: epoch + 1, M.STEP: (epoch + 1) * steps_per_epoch,
                M.LR: stepper.scheduler.get_last_lr()[0], M.TRAIN_LOSS: train_loss}
        if not math.isfinite(train_loss):  # all-reduced, so every rank stops here together
            log.warning("training loss is %s at epoch %d: the run diverged, stopping it", train_loss, epoch + 1)
            # No checkpoint. val/top1 = 0 keeps the searcher's metric present and ranks the trial last.
            report = {M.EPOCH: epoch + 1, M.STEP: last[M.STEP], M.DIVERGED: 1.0, M.VAL_TOP1: 0.0}
            ctx.report(report, None)
            return FitResult(model, report)
        model = task.classifier(stepper.evaluated_module())
        stats = evaluate_shard(model, val_set, cfg.precision, ctx.device)
        last.update(stats.summary("val"))
        history.append(dict(last))
        _checkpoint_and_report(ctx, cfg, base_meta, task, stepper, last,
                               {"val": stats.per_class_table(start.classes)}, history)
    return FitResult(model, last)


def train_epoch(stepper: Stepper, task: Task, loader: TrainLoader, cfg: TrainConfig, epoch: int,
                device: torch.device) -> float:
    """One epoch over this rank's batches; returns the mean training loss over all ranks."""
    rank, world = rank_and_world()
    gen = torch.Generator().manual_seed((cfg.seed * 1000003 + epoch) * 1009 + rank + 1)  # mixup/cutmix draws
    num_classes = len(loader.classes)
    task.train_mode(stepper.module)
    total = torch.zeros((), device=device)  # summed on the device: no host sync per step
    for images, labels in loader.epoch(epoch):
        targets = soft_targets(labels, num_classes, cfg.optim.label_smoothing)
        images, targets = mix(images, targets, cfg.aug, gen)
        total += stepper.step(images, targets)  # a device tensor: no host sync per step
    return (all_reduce_sum(total) / (len(loader) * world)).item()


def evaluate_shard(model: nn.Module, data: CachedSet, precision: str, device: torch.device) -> M.EvalStats:
    """Sufficient statistics of a split, each rank evaluating its own slice, summed over ranks (a set that
    covers a class subset, a shift set, is scored on those classes, as the soup stage scores it)."""
    rank, world = rank_and_world()
    logits = data.project(predict(model, data.images[rank::world], device, precision))
    return M.EvalStats(len(data.classes), device).add(logits, data.labels[rank::world]).all_reduce()


def evaluate_splits(model: nn.Module, splits: dict[str, str], precision: str, device: torch.device) -> dict[str, float]:
    """`<name>/top1`, `/loss`, `/macro_f1` and `/ece` of each named split (decoded one at a time)."""
    metrics: dict[str, float] = {}
    for name, path in splits.items():
        data = load_eval_set(path, model.image_size, device)
        metrics.update(evaluate_shard(model, data, precision, device).summary(name))
    return metrics


def _resume(resume_dir: str | None, task: Task, stepper: Stepper) -> int:
    """Load a run's own checkpoint to continue it; returns the epoch to start from."""
    if not resume_dir:
        return 0
    checkpoint = load_checkpoint(resume_dir)
    state = load_train_state(resume_dir) or {}
    if "module" in state:  # the whole trained module (a text tower, the live weights behind an EMA)
        stepper.module.load_state_dict(state["module"])
    else:
        task.classifier(stepper.module).load_state_dict(checkpoint.state_dict)
    if "optimizer" in state:
        stepper.load_state_dict(state)
    log.info("resuming from %s at epoch %d", resume_dir, checkpoint.meta["epoch"])
    return int(checkpoint.meta["epoch"])


def _checkpoint_and_report(ctx: RunContext, cfg: TrainConfig, base_meta: dict[str, Any], task: Task,
                           stepper: Stepper, metrics: dict[str, float], per_class: dict[str, dict],
                           history: list[dict[str, float]]) -> None:
    """Rank 0 writes a checkpoint to a temp dir and reports it; other ranks report metrics only."""
    rank, _ = rank_and_world()
    if rank != 0:
        ctx.report(metrics, None)
        return
    tmp = Path(tempfile.mkdtemp(prefix="soupsweep-ckpt-"))
    try:
        meta = {"config": cfg.model_dump(mode="json"), "base_checksum": base_meta["base_checksum"],
                "head_init": base_meta.get("head_init", ""), "metrics": metrics, "epoch": metrics[M.EPOCH],
                "step": metrics[M.STEP], "trial_id": ctx.trial_id, "per_class": per_class, "history": history}
        train_state = stepper.state_dict()
        if stepper.average is not None or task.trains_more_than_classifier:
            train_state["module"] = stepper.module.state_dict()
        weights = task.classifier(stepper.evaluated_module()).state_dict()
        directory = save_checkpoint(tmp / "checkpoint", weights, meta, train_state)
        ctx.report(metrics, str(directory))  # the reporter persists it (Ray copies it to storage)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
