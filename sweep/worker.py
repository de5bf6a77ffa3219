"""The Ray Train worker entry: one DDP rank of one trial, running the one training loop."""
from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import Any

import ray.train
import ray.train.torch

from trainers import metrics as M
from trainers.config import TrainConfig
from trainers.loop import RunContext, fit


def train_worker(payload: dict[str, Any]) -> None:
    """payload: {"config": TrainConfig as JSON, "base_dir": base checkpoint URI, "trial_id": str,
    "trial_start": when the trial function began (time.time())}."""
    timeline = {"trial_start": payload.get("trial_start", 0.0), "worker_start": time.time()}
    cfg = TrainConfig.model_validate(payload["config"])
    resume = ray.train.get_checkpoint()  # set when Ray restarts the worker group after a failure
    with resume.as_directory() if resume else contextlib.nullcontext() as resume_dir:
        ctx = RunContext(base_dir=payload["base_dir"], device=ray.train.torch.get_device(),
                         report=partial(report_with_timeline, timeline), resume_dir=resume_dir,
                         trial_id=payload["trial_id"], timeline=timeline)
        fit(cfg, ctx)


def report_with_timeline(timeline: dict[str, float], metrics: dict[str, float], checkpoint_dir: str | None) -> None:
    """`report`, with the phase stamps so far beside the metrics (they stay out of meta.json)."""
    stamps = {f"{M.TIMELINE}{name}": value for name, value in {**timeline, "report": time.time()}.items()}
    report({**metrics, **stamps}, checkpoint_dir)


def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
    """Every rank reports each epoch (a barrier); rank 0 hands over the checkpoint, Ray persists it."""
    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint)
