"""python -m soup.greedy --experiment <MLflow experiment id or name>

Re-runs the soup stage on a finished (or partly finished) sweep, from any process, without Ray:
evaluates every trial checkpoint once, builds the chosen soups and ensembles, prints the
comparison and logs a new soup run in the sweep's MLflow experiment.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from soup.methods import METHODS, parse_methods
from soup.pipeline import soup_experiment
from soup.records import absolute_sqlite
from soup.report import format_table
from trainers.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soup.greedy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="MLflow experiment id or name of the sweep")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--tie-rule", choices=[">=", ">"], default=">=",
                        help="greedy soup: keep a candidate on a tie (>=, the paper's recipe) or not (>)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = soup_experiment(absolute_sqlite(args.tracking_uri), args.experiment,
                                 parse_methods(args.methods), args.tie_rule, args.device)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result.outcome))
    print(f"\nsoup run {result.run_id} logged in experiment {result.experiment_id} at {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
