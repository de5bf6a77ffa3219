"""Ingredient evaluation spread over Ray workers, one per GPU: the forward passes of the soup stage.

Optional: the soup stage runs without Ray. soup/ uses Ray only here (docs/architecture.md), and imports it only
when a parallel evaluation is asked for, so `python -m soup.greedy` never starts or imports it.

Each worker is a Ray actor that builds the model and the evaluation sets once on its device (as the
in-process Evaluator does) and evaluates its share of the ingredients from their checkpoint URIs
(shared storage or pyarrow.fs URIs, read with the same `read_weights`), returning CPU logits. The
driver keeps reading and checking every ingredient itself (the soups re-read its spooled files) and
only takes the logits from the workers.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from soup.scoring.evaluation import Evaluator
from soup.inputs.weights import Converter, read_weights
from soup.scoring.splits import load_eval_sets
from trainers.config import TrainConfig
from trainers.device import resolve_device
from trainers.model import build_classifier

log = logging.getLogger(__name__)


class IngredientEvaluator:
    """Runs as a Ray actor: one resident model and the evaluation sets on its device (its GPU if it has one)."""

    def __init__(self, config: TrainConfig, classes: list[str]):
        device = resolve_device("auto")
        model = build_classifier(config.model, len(classes))
        sets = load_eval_sets(config.data, model.image_size, device)
        self.evaluator = Evaluator(model, sets, device, config.precision)
        self.converter = Converter(config.model, classes)

    def logits(self, uri: str) -> dict[str, torch.Tensor]:
        """The ingredient's logits on every set, on the CPU (what travels back to the driver)."""
        with tempfile.TemporaryDirectory(prefix="soupsweep-eval-") as tmp:  # read_weights may spool a copy
            weights = read_weights(uri, Path(tmp), self.converter)
            return {name: t.cpu() for name, t in self.evaluator.logits(weights.state).items()}


def worker_count(setting: int | str) -> int:
    """How many Ray workers evaluate ingredients (0: in-process). `auto`: one per free GPU when Ray is
    running (or RAY_ADDRESS names a cluster) and at least two GPUs are free; never starts Ray itself."""
    if setting != "auto":
        return int(setting)
    if "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
        return 0  # nobody started Ray in this process, and there is no cluster to attach to
    ray = _ray()
    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            return 0
        ray.init()  # attaches to the cluster RAY_ADDRESS names (ray job submit sets it)
    gpus = int(ray.available_resources().get("GPU", 0))  # free ones: the anytime soup's actor may hold one
    return gpus if gpus >= 2 else 0


def start_remote(uris: list[str], config: TrainConfig, classes: list[str], setting: int | str):
    """Ray workers evaluating `uris` (a RemoteEvaluation), or None to evaluate in this process."""
    workers = min(worker_count(setting), len(uris))
    if not workers:
        return None
    ray = _ray()
    if not ray.is_initialized():
        ray.init()  # an explicit worker count: attach to RAY_ADDRESS or a local cluster, else start one
    gpu = bool(ray.cluster_resources().get("GPU", 0))
    free = int(ray.available_resources().get("GPU" if gpu else "CPU", 0))
    if workers > free:  # more would wait for resources that the stage itself will not release
        log.warning("eval_workers=%d but %d %ss are free: using %d Ray workers", workers, free,
                    "GPU" if gpu else "CPU", free)
        workers = free
    return RemoteEvaluation(ray, uris, config, classes, workers, gpu) if workers else None


class RemoteEvaluation:
    """Ingredients submitted to `workers` actors in turn (all at once, so the workers run while the
    driver checks); results are read back per ingredient as they arrive."""

    def __init__(self, ray, uris: list[str], config: TrainConfig, classes: list[str], workers: int, gpu: bool):
        self.ray = ray
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(IngredientEvaluator)
        self.actors = [actor.remote(config, classes) for _ in range(workers)]
        self.refs = [self.actors[i % workers].logits.remote(uri) for i, uri in enumerate(uris)]
        log.info("evaluating %d ingredients on %d Ray workers (%s)", len(uris), workers, "GPU" if gpu else "CPU")

    def results(self, wanted: list[int]) -> Iterator[tuple[int, dict[str, torch.Tensor] | Exception]]:
        """(index, logits or the error of that ingredient's task) for each wanted index, as they arrive;
        a worker that died fails only its own ingredients."""
        pending = {self.refs[i]: i for i in wanted}
        while pending:
            (ready,), _ = self.ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready)
            try:
                result = self.ray.get(ready)
            except Exception as err:  # RayTaskError (the read or the pass failed), RayActorError (it died)
                result = err
            yield index, result

    def close(self) -> None:
        """End the workers (their GPUs go back to the cluster), and any ingredient still queued on them."""
        for actor in self.actors:
            self.ray.kill(actor)


def _ray():
    import ray

    return ray
