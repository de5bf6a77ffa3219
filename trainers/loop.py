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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainers import metrics as M
from trainers.augment import mix, soft_targets
from trainers.checkpoint import load_checkpoint, load_train_state, local_checkpoint, save_checkpoint
from trainers.config import OptimConfig, TrainConfig
from trainers.data.cache import CachedSet, load_eval_set
from trainers.data.loader import TrainLoader
from trainers.distributed import all_reduce_sum, rank_and_world, unwrap, wrap_ddp
from trainers.errors import UserError
from trainers.evaluate import autocast_for, loss_and_correct, predict
from trainers.model import ImageClassifier, build_classifier

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


@dataclass
class FitResult:
    model: ImageClassifier
    metrics: dict[str, float]


def fit(cfg: TrainConfig, ctx: RunContext) -> FitResult:
    """Train `cfg` from the base checkpoint (or resume), reporting metrics and checkpoints per epoch."""
    rank, world = rank_and_world()
    torch.manual_seed(cfg.seed * 1000 + rank)  # augmentation differs per rank, reproducibly
    with local_checkpoint(ctx.base_dir) as base_dir:
        base = load_checkpoint(base_dir)
    model = build_classifier(cfg.model, base.state_dict["head.weight"].shape[0])
    model.load_state_dict(base.state_dict)
    train_data = TrainLoader(cfg.data.train, cfg.aug, model.image_size, cfg.optim.batch_size, cfg.seed, ctx.device,
                             rank, world)  # this rank's slice of the shards, augmented on the device
    val_set = load_eval_set(cfg.data.val, model.image_size, ctx.device)  # decoded once, kept on the device
    steps_per_epoch = train_data.steps_per_epoch
    if steps_per_epoch == 0:
        raise UserError(f"optim.batch_size: {cfg.optim.batch_size} images per worker × {world} workers "
                        f"is more than the {train_data.num_rows} training images; lower the batch size")
    model.to(ctx.device)
    optimizer = make_optimizer(model, cfg.optim, ctx.device)
    scheduler = cosine_with_warmup(optimizer, cfg.optim.warmup_steps, steps_per_epoch * cfg.optim.epochs)
    start_epoch = _resume(ctx.resume_dir, model, optimizer, scheduler)
    ddp_model = wrap_ddp(model, ctx.device)
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.optim.epochs):
        train_loss = train_epoch(ddp_model, optimizer, scheduler, train_data, cfg, epoch, ctx.device)
        last = {M.EPOCH: epoch + 1, M.STEP: (epoch + 1) * steps_per_epoch, M.LR: scheduler.get_last_lr()[0],
                M.TRAIN_LOSS: train_loss}
        if not math.isfinite(train_loss):  # all-reduced, so every rank stops here together
            log.warning("training loss is %s at epoch %d: the run diverged, stopping it", train_loss, epoch + 1)
            # No checkpoint. val/top1 = 0 keeps the searcher's metric present and ranks the trial last.
            report = {M.EPOCH: epoch + 1, M.STEP: last[M.STEP], M.DIVERGED: 1.0, M.VAL_TOP1: 0.0}
            ctx.report(report, None)
            return FitResult(model, report)
        last.update(evaluate_shard(model, val_set, "val", cfg.precision, ctx.device))
        _checkpoint_and_report(ctx, cfg, base.meta, model, optimizer, scheduler, last)
    return FitResult(model, last)


def make_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and other 1-d parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, fused=device.type == "cuda")


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(model, optimizer, scheduler, loader: TrainLoader, cfg: TrainConfig, epoch: int,
                device: torch.device) -> float:
    """One epoch over this rank's batches; returns the mean training loss over all ranks."""
    rank, world = rank_and_world()
    gen = torch.Generator().manual_seed((cfg.seed * 1000003 + epoch) * 1009 + rank + 1)  # mixup/cutmix draws
    num_classes = len(loader.classes)
    model.train()
    total = torch.zeros((), device=device)  # summed on the device: no host sync per step
    for images, labels in loader.epoch(epoch):
        targets = soft_targets(labels, num_classes, cfg.optim.label_smoothing)
        images, targets = mix(images, targets, cfg.aug, gen)
        with autocast_for(device, cfg.precision):
            logits = model(images)
        loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        total += loss.detach()
    return (all_reduce_sum(total) / (len(loader) * world)).item()


def evaluate_shard(model: nn.Module, data: CachedSet, split: str, precision: str,
                   device: torch.device) -> dict[str, float]:
    """Loss and top-1 of `split`, each rank evaluating its own slice, summed over ranks."""
    rank, world = rank_and_world()
    logits = predict(model, data.images[rank::world], device, precision)
    loss_sum, correct, count = all_reduce_sum(loss_and_correct(logits, data.labels[rank::world])).tolist()
    return {f"{split}/loss": loss_sum / count, M.top1_name(split): correct / count}


def _resume(resume_dir: str | None, model, optimizer, scheduler) -> int:
    """Load a run's own checkpoint to continue it; returns the epoch to start from."""
    if not resume_dir:
        return 0
    checkpoint = load_checkpoint(resume_dir)
    model.load_state_dict(checkpoint.state_dict)
    state = load_train_state(resume_dir)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    log.info("resuming from %s at epoch %d", resume_dir, checkpoint.meta["epoch"])
    return int(checkpoint.meta["epoch"])


def _checkpoint_and_report(ctx: RunContext, cfg: TrainConfig, base_meta: dict[str, Any], model,
                           optimizer, scheduler, metrics: dict[str, float]) -> None:
    """Rank 0 writes a checkpoint to a temp dir and reports it; other ranks report metrics only."""
    rank, _ = rank_and_world()
    if rank != 0:
        ctx.report(metrics, None)
        return
    tmp = Path(tempfile.mkdtemp(prefix="soupsweep-ckpt-"))
    try:
        meta = {"config": cfg.model_dump(mode="json"), "base_checksum": base_meta["base_checksum"],
                "metrics": metrics, "epoch": metrics[M.EPOCH], "step": metrics[M.STEP],
                "trial_id": ctx.trial_id}
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        directory = save_checkpoint(tmp / "checkpoint", unwrap(model).state_dict(), meta, train_state)
        ctx.report(metrics, str(directory))  # the reporter persists it (Ray copies it to storage)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
