"""python clusters/scale.py --cluster PROFILE --trials N | --release

Asks the Ray autoscaler for the GPU nodes of N concurrent trials of a cluster profile, and waits
until they have joined. Run it on the cluster (`ray job submit --working-dir . -- python
clusters/scale.py ...`) before the sweep: the sweep sizes its trial concurrency from the nodes
present when it starts, and the GPU node types of clusters/ start at zero nodes.

The request stays until it is replaced: `--release` replaces it with nothing, and idle GPU nodes
then go away after the cluster's idle timeout. Until then they cost money.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray
from ray.autoscaler.sdk import request_resources

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: sweep.profiles
from sweep.config import ResourcesConfig, SweepConfig  # noqa: E402
from sweep.profiles import load_profile  # noqa: E402
from trainers.config import apply_overrides  # noqa: E402
from trainers.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python clusters/scale.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", help="cluster profile whose trial shape to request (clusters/profiles)")
    parser.add_argument("--trials", type=int, default=1, help="concurrent trials to make room for")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the nodes")
    parser.add_argument("--release", action="store_true", help="drop the request: idle GPU nodes are removed")
    return parser.parse_args(argv)


def profile_resources(name: str) -> ResourcesConfig:
    """The per-trial resources of a cluster profile (the sweep's defaults where it names none)."""
    overrides = load_profile(name, skip=["storage_path", "mlflow.tracking_uri"])  # their ${VAR}s: not needed here
    return SweepConfig.model_validate(apply_overrides({}, overrides)).resources


def trial_bundles(resources: ResourcesConfig, trials: int) -> list[dict[str, float]]:
    """One bundle per worker of every trial, as the trial's Ray Train placement group asks for them."""
    bundle = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}
    return [{kind: float(amount) for kind, amount in bundle.items() if amount > 0}] * (resources.workers * trials)


def wait_for(bundles: list[dict[str, float]], timeout: float) -> dict[str, float]:
    """Until the cluster's totals cover the bundles; returns the totals."""
    need = {kind: sum(b.get(kind, 0) for b in bundles) for kind in ("CPU", "GPU")}
    deadline = time.monotonic() + timeout
    while True:
        have = ray.cluster_resources()
        if all(have.get(kind, 0) >= amount for kind, amount in need.items()):
            return have
        if time.monotonic() > deadline:
            raise UserError(f"the autoscaler did not bring {need} within {timeout:g} s (the cluster has "
                            f"{ {k: have.get(k, 0) for k in need} }); see `ray status` and the autoscaler log "
                            "(`ray monitor <cluster yaml>`): instance quota and GPU capacity are the usual causes; the "
                            "request stays until `python clusters/scale.py --release`")
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.release and not args.cluster:
            raise UserError("give --cluster PROFILE (with --trials N), or --release")
        ray.init()
        if args.release:
            request_resources(bundles=[])
            print("released: idle nodes leave after the cluster's idle timeout")
            return 0
        bundles = trial_bundles(profile_resources(args.cluster), args.trials)
        request_resources(bundles=bundles)
        have = wait_for(bundles, args.timeout)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ready for {args.trials} {args.cluster} trial(s): the cluster has {have.get('GPU', 0):g} GPUs, "
          f"{have.get('CPU', 0):g} CPUs; release with: python clusters/scale.py --release")
    return 0


if __name__ == "__main__":
    sys.exit(main())
