"""Where a sweep's wall time goes: trial start-up and tear-down against training steps (docs/benchmarks.md).

    python bench/trial_overhead.py                       # the demo: 4 trials x 2 workers x 2 epochs
    python bench/trial_overhead.py --workers 1 --concurrency 1

On a local Ray cluster that it starts itself, twice (first with Ray Train's default settings, then
with the ones a sweep sets, sweep.trial.train_env) it runs a sweep of the demo data
(`sweep.driver.run_sweep`, soup stage included) and the floor: as many trials of a bare Ray Train
TorchTrainer (bench/bare_trainer.py; same workers, resources, backend and concurrency). Per trial it
prints the phases read from the `timeline/*` stamps of the trial's MLflow run (wall-clock
`time.time()`, see docs/benchmarks.md) and their medians; then the sweep's start (base + baselines,
Tune's first trial) and end (the manifest and soup stage). Last lines: the share of the sweep's wall
time in training epochs and the median per-trial overhead (Tune starts the trial -> first step, plus
last step -> the next trial started, or -> its end for the last ones), beside the floor's.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import cloudpickle  # noqa: E402

import bare_trainer  # noqa: E402

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL, TAG_TRIAL_ID  # noqa: E402
from trainers.tracking import TAG_KIND  # noqa: E402
from sweep.cluster import trial_concurrency  # noqa: E402
from sweep.config import SweepConfig  # noqa: E402
from sweep.demo import DEMO_DATA_DIR, demo_config  # noqa: E402
from sweep.driver import run_sweep  # noqa: E402
from sweep.trial import LOCAL_CLUSTER_ENV, TRAIN_ENV  # noqa: E402
from trainers.config import validate  # noqa: E402

# (label, from stamp, to stamp): consecutive phases of one trial, as `timeline/<stamp>` metrics
PHASES = [("Tune->trial fn", "scheduled", "trial_start"),  # the trial's process: start-up, imports
          ("fn->workers up", "trial_start", "worker_start"),  # controller, placement group, worker group, pg
          ("base loaded", "worker_start", "base_loaded"),
          ("data ready", "base_loaded", "data_ready"),
          ("model->1st step", "data_ready", "train_start"),
          ("epochs", "train_start", "report"),  # training steps, evaluation, checkpoints, reports
          ("persist+report", "report", "received"),
          ("->fit returned", "received", "fit_end"),  # workers stopped, the controller's result back
          ("offer->trial end", "fit_end", "trial_end")]  # the anytime soup weighs the trial; Tune ends it
# Ray Train's own defaults for what sweep.trial.train_env sets (ray/train/v2/_internal/constants.py)
RAY_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
OURS = {**TRAIN_ENV, **LOCAL_CLUSTER_ENV}  # a cluster the sweep started, as here
cloudpickle.register_pickle_by_value(bare_trainer)  # Ray's workers cannot import bench/


def sweep_config(args: argparse.Namespace, tmp: Path, name: str, reuse_actors: bool | None = None) -> SweepConfig:
    tree = demo_config(args.data_dir, pretrained=not args.random_init)
    tree["search"]["space"].pop("optim.epochs", None)
    tree["search"].update(num_samples=args.trials, max_concurrent_trials=args.concurrency, reuse_actors=reuse_actors)
    tree["optim"]["epochs"] = args.epochs
    tree["resources"]["workers"] = args.workers
    tree["storage_path"] = str(tmp / name / "storage")
    tree["mlflow"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": f"trial-overhead-{name}"}
    return validate(SweepConfig, tree, source="bench")


def trial_timelines(cfg: SweepConfig) -> list[dict[str, float]]:
    """The last value of every timeline/* stamp of each trial run, with the trial id."""
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_TRIAL}'")
    rows = [{"trial": r.data.tags[TAG_TRIAL_ID], **{k.removeprefix("timeline/"): v for k, v in
                                                      r.data.metrics.items() if k.startswith("timeline/")}}
            for r in runs]
    for row in rows:
        row.setdefault("scheduled", row["trial_start"])  # recorded by the driver since the timeline began
        row.setdefault("fit_end", row["trial_end"])  # stamped when the trial offers itself to the anytime soup
    return sorted(rows, key=lambda row: row["scheduled"])


def sweep_marks(cfg: SweepConfig) -> dict[str, float]:
    """When the sweep run was opened (base and baselines written) and the soup run began and ended."""
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    started = {r.data.tags.get(TAG_KIND): r.info.start_time / 1000 for r in runs}
    return {"sweep_run": started[KIND_SWEEP], "soup_start": started[KIND_SOUP]}


def overhead(row: dict[str, float]) -> float:
    """Tune starts the trial -> first training step, plus last training step -> the next trial started
    (the first one Tune started after this one ended; for the last trials, -> their end)."""
    return (row["train_start"] - row["scheduled"]) + (row.get("next_start", row["trial_end"]) - row["last_step"])


def with_next_starts(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    for row in rows:
        later = [other["scheduled"] for other in rows if other["scheduled"] >= row["trial_end"]]
        if later:
            row["next_start"] = min(later)
    return rows


def print_trials(rows: list[dict[str, float]]) -> None:
    labels = [label for label, _, _ in PHASES] + ["->next trial", "train steps", "overhead"]
    print("  ".join(f"{x:>15}" for x in ["trial", *labels]))
    table = [[row[b] - row[a] for _, a, b in PHASES] + [row.get("next_start", row["trial_end"]) - row["trial_end"],
                                                       row["train_s"], overhead(row)] for row in rows]
    for row, values in zip(rows, table):
        print("  ".join(f"{x:>15}" for x in [row["trial"], *(f"{v:.1f} s" for v in values)]))
    medians = [statistics.median(column) for column in zip(*table)]
    print("  ".join(f"{x:>15}" for x in ["median", *(f"{v:.1f} s" for v in medians)]))


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def sweep_and_floor(args: argparse.Namespace, tmp: Path, name: str, env: dict[str, str]) -> dict:
    """One sweep and its floor under the Train settings `env` (RAY_DEFAULTS or OURS)."""
    for key in RAY_DEFAULTS:  # what the driver's environment sets, train_env() leaves alone
        os.environ.pop(key, None)
    os.environ.update(env if env is RAY_DEFAULTS else {})
    reuse = env is not RAY_DEFAULTS  # Tune's default is False; a sweep's (search.reuse_actors) True
    cfg = sweep_config(args, tmp, name, reuse)
    began = time.time()
    run_sweep(cfg)
    ended = time.time()
    res = cfg.resources
    space = {"epochs": args.epochs, "workers": res.workers, "cpus": res.cpus_per_worker,
             "env": {} if env is RAY_DEFAULTS else env}
    bare = bare_trainer.floor_rows(str(tmp / name / "bare"), args.trials, trial_concurrency(cfg),
                                   res.driver_cpus, space, reuse)
    return {"cfg": cfg, "began": began, "ended": ended, "floor": [overhead(r) for r in with_next_starts(bare)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials in the sweep and in the floor")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers per trial")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--concurrency", type=int, default=None, help="max concurrent trials (default: what fits)")
    parser.add_argument("--random-init", action="store_true",
                        help="random towers instead of the demo's stand-in pretrained weights (which take minutes "
                             "to make on first use on a loaded machine; start-up costs the same)")
    parser.add_argument("--data-dir", default=DEMO_DATA_DIR, help="the demo data (generated on first use)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="trial-overhead-") as folder:
        tmp = Path(folder)
        sweep_config(args, tmp, "data")  # the demo data and stand-in weights exist from here on
        began = time.time()
        ray.init(address="local")  # started here, as a sweep's own cluster is
        ray_up = time.time() - began
        try:
            runs = {"Ray Train's defaults": (RAY_DEFAULTS, sweep_and_floor(args, tmp, "ray-defaults", RAY_DEFAULTS)),
                    "soupsweep's settings": (OURS, sweep_and_floor(args, tmp, "soupsweep", OURS))}
        finally:
            ray.shutdown()
        print(f"\n{args.trials} trials x {args.workers} workers x {args.epochs} epochs, at most "
              f"{args.concurrency or 'what fits'} at once; Ray up {ray_up:.1f} s")
        for label, (env, run) in runs.items():
            reuse = "false" if env is RAY_DEFAULTS else "true"
            print(f"\n== {label}: Tune reuse_actors={reuse}, " + ", ".join(f"{k}={v}" for k, v in env.items()))
            report(run)
    return 0


def report(run: dict) -> None:
    rows, sweep = with_next_starts(trial_timelines(run["cfg"])), sweep_marks(run["cfg"])
    print_trials(rows)
    first, last = min(r["scheduled"] for r in rows), max(r["trial_end"] for r in rows)
    wall, bare = run["ended"] - run["began"], run["floor"]
    print(f"sweep {wall:.1f} s: base + baselines {sweep['sweep_run'] - run['began']:.1f} s, "
          f"Tune -> first trial {first - sweep['sweep_run']:.1f} s, trials {last - first:.1f} s, "
          f"search end -> soup run opened (manifest) {sweep['soup_start'] - last:.1f} s, "
          f"soup run {run['ended'] - sweep['soup_start']:.1f} s; "
          f"first step {min(r['train_start'] for r in rows) - run['began']:.1f} s after run_sweep began")
    print("floor (bare TorchTrainer, same scaling, same settings): per-trial overhead "
          + ", ".join(f"{b:.1f}" for b in bare) + f" s, median {statistics.median(bare):.1f} s")
    training = union_length([(r["train_start"], r["last_step"]) for r in rows])
    ours = statistics.median(overhead(r) for r in rows)
    print(f"training epochs {training:.1f} s = {100 * training / wall:.0f} % of the sweep's {wall:.1f} s; "
          f"median per-trial overhead {ours:.1f} s (floor {statistics.median(bare):.1f} s, "
          f"{ours / statistics.median(bare):.1f}x)")


if __name__ == "__main__":
    sys.exit(main())
