"""The Ray cluster as the sweep sees it: connecting, fitting trials into it, checking its storage."""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep.config import SweepConfig
from sweep.storage_faults import probe_write
from trainers.errors import UserError
from trainers.uris import is_remote, local_path, unwritable_folder

log = logging.getLogger(__name__)


@contextlib.contextmanager
def connect_ray() -> Iterator[bool]:
    """Attach to RAY_ADDRESS or a cluster started with `ray start`, else start a local one; shut
    down only what we started. Yields whether this process started the cluster (this machine only)."""
    if ray.is_initialized():
        yield started_here()
        return
    context = ray.init()
    log.info("Ray cluster at %s (dashboard %s): %s", ray.get_runtime_context().gcs_address,
             context.dashboard_url or "off", ray.cluster_resources())
    try:
        yield started_here()
    finally:
        ray.shutdown()


def started_here() -> bool:
    """Whether `ray.init` in this process started the cluster, which then is this machine only. Ray has
    no public API for it: the driver that started a cluster holds its head node (ray 2.60)."""
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and node.head)


def trial_concurrency(cfg: SweepConfig) -> int:
    """How many trials run at once: what the cluster fits, capped by search.max_concurrent_trials.

    When one trial does not fit the cluster as it is now, Tune would wait forever: fail at once,
    unless search.max_concurrent_trials is set, which says the cluster will grow (an autoscaler)."""
    need, have = cfg.resources.per_trial(), ray.cluster_resources()
    fits = []
    for kind, amount in need.items():
        if amount <= 0:
            continue
        if have.get(kind, 0) < amount:
            if cfg.search.max_concurrent_trials:
                log.warning("a trial needs %g %s and the cluster has %g now: waiting for the autoscaler to "
                            "add nodes for %d trials", amount, kind, have.get(kind, 0),
                            cfg.search.max_concurrent_trials)
                return cfg.search.max_concurrent_trials
            raise UserError(f"resources: a trial needs {amount:g} {kind} (driver + {cfg.resources.workers} "
                            f"workers) but the Ray cluster has {have.get(kind, 0):g}; lower "
                            "resources.workers / cpus_per_worker / gpus_per_worker (fractions work), or set "
                            "search.max_concurrent_trials when an autoscaler will add the nodes")
        fits.append(math.floor(have[kind] / amount + 1e-9))
    return min([*fits, cfg.search.max_concurrent_trials or cfg.search.num_samples])


def check_local_storage(storage: str) -> None:
    """Before anything is created: a local storage_path is a folder we can write, or can be made as one
    (a file there, or in its way, is a typo the probe below would only catch after MLflow and Ray started)."""
    blocker = None if is_remote(storage) else unwritable_folder(local_path(storage))
    if blocker is not None:
        what = "a file" if blocker.is_file() else "a folder you cannot write"
        raise UserError(f"storage_path {storage}: {blocker} is {what}; set storage_path to a new folder or "
                        "one you can write (trial checkpoints go there)")


def check_storage_writable(storage: str) -> None:
    """Before any trial: the driver and every node of the cluster can write to the storage."""
    problems = {"driver": probe_write(storage)}
    probe = ray.remote(num_cpus=0)(probe_write)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    results = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(storage)
                       for n in nodes])
    problems.update({f"node {n[:12]}": r for n, r in zip(nodes, results)})
    failed = {where: error for where, error in problems.items() if error}
    if failed:
        where, error = next(iter(failed.items()))
        raise UserError(f"storage_path {storage} is not writable from {', '.join(failed)} ({error}); "
                        "give a path every node can write (shared storage: NFS, s3://, gs://)")
