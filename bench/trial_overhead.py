"""Where a sweep's wall time goes: trial start-up and tear-down against training steps (docs/benchmarks.md).

    python bench/trial_overhead.py                       # the demo: 2 trials x 2 workers x 2 epochs
    python bench/trial_overhead.py --workers 1 --trials 4

Runs a sweep of the demo data (`sweep.driver.run_sweep`, soup stage included) on a local Ray cluster
that it starts itself, then, in the same cluster, the floor: the same number of trials of a bare
Ray Train TorchTrainer (same workers, resources, backend and concurrency) whose loop only reports,
rank 0 with a one-file checkpoint, once per epoch. Per trial it prints the phases read from the
`timeline/*` stamps of the trial's MLflow run (wall-clock `time.time()`, see docs/benchmarks.md),
and their medians; then the sweep's start (Ray up, base + baselines, Tune's first trial) and end (the
manifest and soup stage). Last line: the share of the sweep's wall time in training epochs and the
median per-trial overhead (trial start -> first step, plus last step -> trial end), beside the floor's.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

from soup.inputs.records import KIND_SOUP, KIND_SWEEP, KIND_TRIAL, TAG_KIND, TAG_TRIAL_ID  # noqa: E402
from sweep.cluster import trial_concurrency  # noqa: E402
from sweep.config import SweepConfig  # noqa: E402
from sweep.demo import DEMO_DATA_DIR, demo_config  # noqa: E402
from sweep.driver import run_sweep  # noqa: E402
from trainers.config import validate  # noqa: E402

# (label, from stamp, to stamp): consecutive phases of one trial, as `timeline/<stamp>` metrics
PHASES = [("Tune->trial fn", "scheduled", "trial_start"),  # the trial's process: start-up, imports
          ("fn->workers up", "trial_start", "worker_start"),  # controller, placement group, worker group, pg
          ("base loaded", "worker_start", "base_loaded"),
          ("data ready", "base_loaded", "data_ready"),
          ("model->1st step", "data_ready", "train_start"),
          ("epochs", "train_start", "report"),  # training steps, evaluation, checkpoints, reports
          ("persist+report", "report", "received"),
          ("->trial end", "received", "trial_end")]


def sweep_config(args: argparse.Namespace, tmp: Path) -> SweepConfig:
    tree = demo_config(args.data_dir, pretrained=not args.random_init)
    tree["search"]["space"].pop("optim.epochs", None)
    tree["search"].update(num_samples=args.trials, max_concurrent_trials=args.concurrency)
    tree["optim"]["epochs"] = args.epochs
    tree["resources"]["workers"] = args.workers
    tree["storage_path"] = str(tmp / "storage")
    tree["mlflow"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "trial-overhead"}
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
    return sorted(rows, key=lambda row: row["scheduled"])


def sweep_marks(cfg: SweepConfig) -> dict[str, float]:
    """When the sweep run was opened (base and baselines written) and the soup run began and ended."""
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    started = {r.data.tags.get(TAG_KIND): r.info.start_time / 1000 for r in runs}
    return {"sweep_run": started[KIND_SWEEP], "soup_start": started[KIND_SOUP]}


def overhead(row: dict[str, float]) -> float:
    """Tune starts the trial -> first training step, plus last training step -> trial end."""
    return (row["train_start"] - row["scheduled"]) + (row["trial_end"] - row["last_step"])


def print_trials(rows: list[dict[str, float]]) -> None:
    labels = [label for label, _, _ in PHASES] + ["train steps", "overhead"]
    print("  ".join(f"{x:>17}" for x in ["trial", *labels]))
    table = [[row[b] - row[a] for _, a, b in PHASES] + [row["train_s"], overhead(row)] for row in rows]
    for row, values in zip(rows, table):
        print("  ".join(f"{x:>17}" for x in [row["trial"], *(f"{v:.1f} s" for v in values)]))
    medians = [statistics.median(column) for column in zip(*table)]
    print("  ".join(f"{x:>17}" for x in ["median", *(f"{v:.1f} s" for v in medians)]))


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def next_trial_gaps(rows: list[dict[str, float]]) -> list[float]:
    """For each trial that started after another ended: its start minus the latest end before it."""
    ends = sorted(row["trial_end"] for row in rows)
    return [row["scheduled"] - max(e for e in ends if e <= row["scheduled"])
            for row in rows if any(e <= row["scheduled"] for e in ends)]


def bare_worker(config: dict) -> None:
    """The floor's loop: no model, no data; every rank reports once per epoch, rank 0 with a checkpoint."""
    import ray.train

    worker_start = time.time()
    for epoch in range(config["epochs"]):
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            folder = Path(tempfile.mkdtemp(prefix="bare-ckpt-"))
            (folder / "weights").write_bytes(b"0" * 1024)
            checkpoint = ray.train.Checkpoint.from_directory(str(folder))
        ray.train.report({"epoch": epoch + 1, "worker_start": worker_start, "report": time.time()},
                         checkpoint=checkpoint)


def bare_trial(config: dict) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = time.time()
    trainer = TorchTrainer(bare_worker, train_loop_config={"epochs": config["epochs"]},
                           torch_config=TorchConfig(backend="gloo"),
                           scaling_config=ScalingConfig(num_workers=config["workers"],
                                                        resources_per_worker={"CPU": config["cpus"]}),
                           run_config=RunConfig(name=f"bare-{tune.get_context().get_trial_id()}",
                                                storage_path=config["storage"]))
    metrics = trainer.fit().metrics
    tune.report({**metrics, "trial_start": started, "fit_end": time.time()})


class TrialStartsAndEnds(tune.Callback):
    def __init__(self):
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.starts[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ends[trial.trial_id] = time.time()


def floor(cfg: SweepConfig, tmp: Path, epochs: int) -> list[float]:
    """Per-trial overhead of bare TorchTrainer trials: Tune starts the trial -> loop entered, last report ->
    trial end."""
    res, marks = cfg.resources, TrialStartsAndEnds()
    space = {"epochs": epochs, "workers": res.workers, "cpus": res.cpus_per_worker, "storage": str(tmp / "bare")}
    tuner = tune.Tuner(tune.with_resources(bare_trial, {"cpu": res.driver_cpus}), param_space=space,
                       tune_config=tune.TuneConfig(num_samples=cfg.search.num_samples,
                                                   max_concurrent_trials=trial_concurrency(cfg)),
                       run_config=tune.RunConfig(name="bare", storage_path=str(tmp / "bare"), callbacks=[marks],
                                                 verbose=0))
    results = tuner.fit()
    return [(r.metrics["worker_start"] - marks.starts[r.metrics["trial_id"]])
            + (marks.ends[r.metrics["trial_id"]] - r.metrics["report"]) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="trials in the sweep and in the floor")
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
        cfg = sweep_config(args, tmp)  # the demo data and stand-in weights exist from here on
        began = time.time()
        ray.init(address="local")
        ray_up = time.time()
        try:
            run_sweep(cfg)
            ended = time.time()
            bare = floor(cfg, tmp, args.epochs)
            at_once = trial_concurrency(cfg)
        finally:
            ray.shutdown()
        print(f"\n{args.trials} trials x {args.workers} workers x {args.epochs} epochs, {at_once} at once; per trial:")
        report(cfg, {"began": began, "ray_up": ray_up, "ended": ended}, bare)
    return 0


def report(cfg: SweepConfig, marks: dict[str, float], bare: list[float]) -> None:
    rows, sweep = trial_timelines(cfg), sweep_marks(cfg)
    print_trials(rows)
    first, last = min(r["scheduled"] for r in rows), max(r["trial_end"] for r in rows)
    wall = marks["ended"] - marks["began"]
    gaps = next_trial_gaps(rows)
    print(f"\nsweep {wall:.1f} s: Ray up {marks['ray_up'] - marks['began']:.1f} s, "
          f"base + baselines {sweep['sweep_run'] - marks['ray_up']:.1f} s, "
          f"Tune -> first trial {first - sweep['sweep_run']:.1f} s, trials {last - first:.1f} s, "
          f"search end -> soup run opened (manifest, scoring) {sweep['soup_start'] - last:.1f} s, "
          f"soup run {marks['ended'] - sweep['soup_start']:.1f} s; "
          f"first step {min(r['train_start'] for r in rows) - marks['began']:.1f} s after start")
    if gaps:
        print(f"trial end -> next trial start: median {statistics.median(gaps):.1f} s over {len(gaps)} trials")
    print(f"floor (bare TorchTrainer, same scaling, same run): per-trial overhead "
          + ", ".join(f"{b:.1f}" for b in bare) + f" s, median {statistics.median(bare):.1f} s")
    training = union_length([(r["train_start"], r["last_step"]) for r in rows])
    ours = statistics.median(overhead(r) for r in rows)
    print(f"training epochs {training:.1f} s = {100 * training / wall:.0f} % of the sweep's {wall:.1f} s; "
          f"median per-trial overhead {ours:.1f} s (floor {statistics.median(bare):.1f} s, "
          f"{ours / statistics.median(bare):.1f}x)")


if __name__ == "__main__":
    sys.exit(main())
