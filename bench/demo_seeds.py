"""The demo sweep over several seeds: mean and spread of every method on test and the shift set
(the README's demo table; results: docs/benchmarks.md).

    python bench/demo_seeds.py --work DIR                   # seeds 0 1 2 3 4
    python bench/demo_seeds.py --work DIR --seeds 2         # seeds 0 1
    python bench/demo_seeds.py --work DIR --seed-list 0 3 7

Each seed runs `python -m sweep.run --seed N` (the embedded demo, its data, search and training drawn
from N) in its own working directory DIR/seed-N (its own generated data, MLflow sqlite, artifacts and
checkpoints), one after the other; the run's output goes to DIR/seed-N/sweep.out. The numbers are read
from what the soup stage recorded (the soup run's comparison.parquet in MLflow), not from the console.
Printed: each run's command and wall time, then per method (the comparison's rows but the single
trials) top-1 and macro-F1 (%) on test and every shift set as mean ± std [min–max] over the seeds
(std with n−1; 0 for one seed). Held-out is left out: it is what the methods were selected on. The
table also goes to DIR/table.txt, each seed's comparison rows and wall time to DIR/comparisons.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soup.inputs.records import KIND_SOUP  # noqa: E402
from trainers.tracking import TAG_KIND  # noqa: E402
from soup.outputs.comparison import SHIFT_AVG, TEST, TRIAL  # noqa: E402

METRICS = {"top1": "top-1", "macro_f1": "F1"}
# Reading one small artifact per run: no download progress bar between the lines (the runs inherit this;
# their output goes to a file)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="a new or empty directory for the runs (DIR/seed-N), the table and the rows")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=5, metavar="N", help="run seeds 0 .. N-1 (default 5)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="S", help="run these seeds (integers >= 0)")
    seeds.add_argument("--report", action="store_true",
                       help="run nothing: print the tables again from DIR/comparisons.json of an earlier run "
                            "(and write them to DIR/table.txt anew)")
    return parser.parse_args(argv)


def chosen_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds to run; a mistake is a one-line ValueError, raised before anything is made."""
    if args.seed_list is None:
        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds}: give a number of seeds >= 1")
        return list(range(args.seeds))
    if min(args.seed_list) < 0 or len(set(args.seed_list)) != len(args.seed_list):
        raise ValueError(f"--seed-list {' '.join(map(str, args.seed_list))}: give distinct integers >= 0")
    return args.seed_list


def check_work(work: Path) -> None:
    """The runs go into a new or empty directory: nothing already there is overwritten."""
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise ValueError(f"--work {work}: not a new or empty directory; give one (nothing in it is overwritten)")


def run_seed(work: Path, seed: int) -> dict:
    """`python -m sweep.run --seed N` in work/seed-N (this repository's code first on the path); its
    command, wall time and the comparison its soup stage recorded."""
    cwd = work / f"seed-{seed}"
    cwd.mkdir(parents=True)
    command = [sys.executable, "-m", "sweep.run", "--seed", str(seed)]
    shown = f"python -m sweep.run --seed {seed}"
    print(f"seed {seed}: {shown}  (in {cwd}; output in {cwd / 'sweep.out'})", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",  # sweep.out fills as the run goes
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    with open(cwd / "sweep.out", "w") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = (cwd / "sweep.out").read_text().splitlines()[-5:]
        raise RuntimeError(f"seed {seed}: `{shown}` exited with {done.returncode} after {duration(seconds)}; "
                           f"the end of {cwd / 'sweep.out'}:\n" + "\n".join(tail))
    print(f"seed {seed}: {duration(seconds)}", flush=True)
    return {"seed": seed, "command": shown, "seconds": round(seconds, 1),
            "rows": read_comparison(f"sqlite:///{cwd / 'mlflow.db'}")}


def read_comparison(tracking_uri: str) -> list[dict]:
    """The comparison rows (method, set, top1, macro_f1, ...) of the latest finished soup run recorded at
    `tracking_uri`, from its comparison.parquet artifact."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_KIND}` = '{KIND_SOUP}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RuntimeError(f"no finished soup run recorded in {tracking_uri}")
    with tempfile.TemporaryDirectory(prefix="soupsweep-seeds-") as tmp:
        path = download_artifacts(run_id=runs[0].info.run_id, artifact_path="comparison.parquet", dst_path=tmp,
                                  tracking_uri=tracking_uri)
        return pq.read_table(path).to_pylist()


def result_sets(rows: list[dict]) -> list[str]:
    """test and each shift set, in the comparison's order; shift/avg only when it averages several."""
    sets = [s for s in dict.fromkeys(r["set"] for r in rows) if s == TEST or s.startswith("shift/")]
    return sets if len(sets) > 3 else [s for s in sets if s != SHIFT_AVG]


def spread_rows(tables: list[list[dict]]) -> list[dict]:
    """Per method (not the single trials), result set and metric: mean, std (n−1; 0 for one value), min,
    max and n over the tables (one per seed; a method a seed lacks counts in its n only)."""
    every = [row for table in tables for row in table]
    methods = [m for m in dict.fromkeys(r["method"] for r in every) if not m.startswith(TRIAL)]
    out = []
    for method in methods:
        for set_name in result_sets(every):
            for metric in METRICS:
                values = [r[metric] for table in tables for r in table
                          if r["method"] == method and r["set"] == set_name and r[metric] is not None]
                if values:
                    out.append({"method": method, "set": set_name, "metric": metric, "n": len(values),
                                "mean": statistics.fmean(values), "min": min(values), "max": max(values),
                                "std": statistics.stdev(values) if len(values) > 1 else 0.0})
    return out


def format_spread_table(rows: list[dict], seeds: int) -> str:
    """One line per method, one column per metric and set: 'mean ± std [min–max]' in %, '(n=k)' added
    where a method was measured on fewer than `seeds` seeds."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    columns = [(metric, s) for metric in METRICS for s in sets if any(r["metric"] == metric for r in rows)]
    cells = {(r["method"], r["metric"], r["set"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    texts = {key: _cell(row, seeds) for key, row in cells.items()}
    names = [f"{set_name} {METRICS[metric]}" for metric, set_name in columns]
    widths = [max([len(name), *(len(texts.get((m, *col), "")) for m in methods)]) + 2
              for name, col in zip(names, columns)]
    first = max(len("method"), *map(len, methods)) + 2
    lines = [f"{'method':<{first}}" + "".join(f"{name:>{w}}" for name, w in zip(names, widths))]
    lines += [f"{m:<{first}}" + "".join(f"{texts.get((m, *col), ''):>{w}}" for col, w in zip(columns, widths))
              for m in methods]
    return "\n".join(lines)


def _cell(row: dict, seeds: int) -> str:
    pct = {k: 100 * row[k] for k in ("mean", "std", "min", "max")}
    text = f"{pct['mean']:.1f} ± {pct['std']:.1f} [{pct['min']:.1f}–{pct['max']:.1f}]"
    return text + (f" (n={row['n']})" if row["n"] < seeds else "")


def paired_against_best(tables: list[list[dict]]) -> str:
    """Each method's top-1 minus the best single model's, seed by seed (the seeds share their data, so the
    difference is what the method changes), in points, and how many seeds it is ahead."""
    every = [row for table in tables for row in table]
    methods = [m for m in dict.fromkeys(r["method"] for r in every) if not m.startswith(TRIAL) and m != "best"]
    top1 = {(r["method"], r["set"], i): r["top1"] for i, table in enumerate(tables) for r in table}
    lines = []
    for method in methods:
        cells = []
        for set_name in result_sets(every):
            diffs = [100 * (top1[(method, set_name, i)] - top1[("best", set_name, i)]) for i in range(len(tables))
                     if (method, set_name, i) in top1 and ("best", set_name, i) in top1]
            ahead = sum(d > 0 for d in diffs)
            cells.append(f"{set_name} " + " ".join(f"{d:+.1f}" for d in diffs) + f" (ahead {ahead}/{len(diffs)})")
        lines.append(f"{method:<22}" + "   ".join(cells))
    return "\n".join(lines)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def report(runs: list[dict]) -> str:
    """The table with what it is: seeds, the command per run, wall times."""
    seeds = [r["seed"] for r in runs]
    times = ", ".join(f"seed {r['seed']} {duration(r['seconds'])}" for r in runs)
    return (f"The demo (`python -m sweep.run --seed N`) over seeds {' '.join(map(str, seeds))}: top-1 and macro-F1 "
            f"in %, mean ± std [min–max] over the {len(seeds)} seeds\n"
            + format_spread_table(spread_rows([r["rows"] for r in runs]), len(seeds))
            + f"\nwall time per run: {times}\n\ntop-1 minus best's, seed by seed, in points:\n"
            + paired_against_best([r["rows"] for r in runs]))


def report_again(work: Path) -> int:
    """--report: the tables from an earlier run's rows, printed and written to DIR/table.txt anew."""
    rows = work / "comparisons.json"
    if not rows.is_file():
        print(f"error: --report: {rows} does not exist; give the --work directory of an earlier run",
              file=sys.stderr)
        return 2
    text = report(json.loads(rows.read_text()))
    (work / "table.txt").write_text(text + "\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report_again(args.work)
    try:
        seeds = chosen_seeds(args)
        check_work(args.work)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work = args.work.resolve()
    print(f"python bench/demo_seeds.py {' '.join(sys.argv[1:] if argv is None else argv)}", flush=True)
    runs = []
    for seed in seeds:
        try:
            runs.append(run_seed(work, seed))
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        (work / "comparisons.json").write_text(json.dumps(runs, indent=1))  # kept as each seed ends
    text = report(runs)
    (work / "table.txt").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
