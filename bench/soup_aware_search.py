"""Soup-aware search against random search, for the same trial budget (results: docs/benchmarks.md).

    python bench/soup_aware_search.py                       # CPU: 8 trials, seeds 0 1 2
    python bench/soup_aware_search.py --trials 16 --seeds 0 1 2 3 --gpus-per-worker 1   # a GPU machine

Every sweep fine-tunes the tiny model from one shared initialisation (the demo's stand-in
"pretrained" weights: a short contrastive pre-training on the generated data, so that trials share
a basin as CLIP fine-tunes do) on the demo data, which has a distribution-shift set (sketches). The
search space reaches learning rates high enough to leave that basin. For each seed, two sweeps run
one after the other in one Ray cluster:

- random: random search, the search reports each trial's val/top1;
- soup_gain: Optuna TPE with search.objective soup_gain (the gain the trial brought to the anytime soup).

Both keep an anytime soup (the greedy soup of the trials finished so far). Printed per sweep: the
final greedy soup's held-out, test and shift accuracy, its size, the best single model's, and the
number of finished trials after which the running soup first reached 99% of its final held-out
accuracy; then the mean over seeds per strategy and the soup_gain - random differences. Whatever
comes out is the result.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep.config import SweepConfig  # noqa: E402
from sweep.demo import demo_config  # noqa: E402
from sweep.driver import run_sweep  # noqa: E402
from trainers.config import validate  # noqa: E402

SPACE = {
    "optim.lr": {"loguniform": [1e-4, 3e-2]},
    "optim.weight_decay": {"loguniform": [1e-3, 0.3]},
    "optim.label_smoothing": {"off_or_uniform": [0.0, 0.2]},
    "aug.mixup_alpha": {"off_or_uniform": [0.0, 0.5]},
    "optim.epochs": {"randint": [2, 6]},
    "seed": {"randint": [0, 10_000]},
}
STRATEGIES = {"random": {"algorithm": "random", "objective": "val_top1"},
              "soup_gain": {"algorithm": "optuna", "objective": "soup_gain"}}


def sweep_tree(work: Path, strategy: str, seed: int, args) -> dict:
    tree = demo_config(work / "data")
    tree["search"] = {**STRATEGIES[strategy], "num_samples": args.trials, "seed": seed, "space": SPACE,
                      "max_concurrent_trials": args.concurrent}
    tree["resources"] = {"workers": 1, "cpus_per_worker": 0.5, "driver_cpus": 0.25,
                         "gpus_per_worker": args.gpus_per_worker}
    tree["optim"]["grad_clip"] = 1.0
    tree["storage_path"] = str(work / "storage")
    tree["mlflow"] = {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": f"{strategy}-seed{seed}"}
    tree["soup"] = {"methods": ["best", "greedy"]}
    tree["anytime"] = {"gpus": 0}
    return tree


def measure(outcome, tracking_uri: str) -> dict:
    """The final anytime soup's accuracies and how soon the running soup got near its final value."""
    client = MlflowClient(tracking_uri)
    history = sorted(client.get_metric_history(outcome.sweep_run_id, "anytime/soup_heldout"), key=lambda m: m.step)
    final = history[-1].value
    reached = next(m.step for m in history if m.value >= 0.99 * final)
    soup_run = client.get_run(outcome.soup.run_id).data.metrics
    (greedy,) = [r for r in outcome.soup.outcome.results if r.name == "greedy"]  # started from the anytime soup
    return {"heldout": soup_run["greedy/heldout/top1"], "test": soup_run["greedy/test/top1"],
            "shift": soup_run["greedy/shift/sketch/top1"], "size": len(greedy.members),
            "offered": len(history), "trials_to_99pct": reached,
            "best_single_heldout": soup_run["best/heldout/top1"], "best_single_shift": soup_run["best/shift/sketch/top1"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="soupsweep-bench-") as tmp:
        ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False)
        for seed in args.seeds:
            for strategy in STRATEGIES:
                cfg = validate(SweepConfig, sweep_tree(Path(tmp), strategy, seed, args))
                row = {"strategy": strategy, "seed": seed, **measure(run_sweep(cfg), cfg.mlflow.tracking_uri)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        ray.shutdown()
    print(summary(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


def summary(rows: list[dict]) -> str:
    keys = ["heldout", "test", "shift", "size", "trials_to_99pct", "best_single_heldout", "best_single_shift"]
    lines = [f"{'strategy':10} " + " ".join(f"{k:>20}" for k in keys)]
    means = {}
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        means[strategy] = {k: statistics.fmean(r[k] for r in mine) for k in keys}
        lines.append(f"{strategy:10} " + " ".join(f"{means[strategy][k]:20.4f}" for k in keys))
    lines.append(f"{'difference':10} " + " ".join(f"{means['soup_gain'][k] - means['random'][k]:20.4f}" for k in keys))
    wins = sum(a["heldout"] > b["heldout"] for a, b in zip(
        [r for r in rows if r["strategy"] == "soup_gain"], [r for r in rows if r["strategy"] == "random"]))
    lines.append(f"soup_gain's final soup beat random search's on held-out in {wins} of {len(rows) // 2} seeds")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
