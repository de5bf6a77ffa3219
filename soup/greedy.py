"""python -m soup.greedy --experiment <MLflow experiment id or name>
python -m soup.greedy --ingredients 'dir/*' [--base zeroshot.pt] [--model ViT-B-32] --heldout h.parquet --test t.parquet

Runs the soup stage from any process, without Ray: on a sweep's trials (found through its MLflow
experiment) or on explicit checkpoints (our checkpoint directories, .safetensors files, PyTorch state
dicts of open_clip models, loaded weights-only). Evaluates every ingredient once, builds the chosen
soups and ensembles, prints the comparison and logs a soup run in MLflow.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from soup.explicit import ExplicitInputs
from soup.methods import METHODS, parse_methods
from soup.options import DEFAULT_METHODS, SOUP_METHODS, SoupOptions
from soup.pipeline import DEFAULT_EXPERIMENT, soup_experiment, soup_files
from soup.records import absolute_sqlite
from soup.report import format_table
from trainers.config import validate
from trainers.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soup.greedy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", help="MLflow experiment id or name of the sweep; with --ingredients, the "
                        f"experiment the soup run is logged in (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    method = parser.add_argument_group("methods")
    method.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} "
                        f"(default: {','.join(DEFAULT_METHODS)})")
    method.add_argument("--tie-rule", choices=[">=", ">"], help="greedy: keep a candidate on a tie (>=, the "
                        "paper's recipe, default) or not (>)")
    method.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    method.add_argument("--eval-workers", help="Ray workers that evaluate the ingredients in parallel: auto "
                        "(default: one per free GPU when Ray is running or RAY_ADDRESS is set and at least two "
                        "are free, else none), 0 (in this process) or N (N workers, one GPU each when the "
                        "cluster has GPUs; starts a local Ray if none is running)")
    method.add_argument("--greedy-repeats", type=int, help="extra greedy soups over random orders (spread)")
    method.add_argument("--wiseft-alphas", help="comma-separated α values (default 0,0.1,...,1)")
    method.add_argument("--wiseft-targets", help=f"comma-separated among best,{','.join(SOUP_METHODS)} "
                        "(default greedy,best)")
    method.add_argument("--learned-steps", type=int, help="learned soups: optimisation steps (default 20)")
    method.add_argument("--outlier-z", type=float, help="weight screen: leave out an ingredient whose robust "
                        "z-score of its distance from the base exceeds this (default 3.5; 0: off)")
    method.add_argument("--register-as", help="register the soup in the MLflow model registry under this name")
    method.add_argument("--register-method", help=f"which soup to register: one of {','.join(SOUP_METHODS)} "
                        "(default greedy)")
    files = parser.add_argument_group("explicit ingredients (no sweep)")
    files.add_argument("--ingredients", nargs="+", metavar="PATTERN",
                       help="globs of checkpoint directories or weight files (.safetensors, .pt, .pth, .bin)")
    files.add_argument("--base", help="the shared initialisation (zero-shot model): checkpoint dir or weights file")
    files.add_argument("--model", help="open_clip architecture of weights without meta.json (e.g. ViT-B-32)")
    files.add_argument("--templates", choices=["openai-7", "simple"], help="prompts for zero-shot heads")
    for split in ("heldout", "test", "train"):
        files.add_argument(f"--{split}", help=f"{split} split (Parquet)" + (", only to recompute BatchNorm "
                           "statistics" if split == "train" else ""))
    files.add_argument("--shift", action="append", default=[], metavar="NAME=PATH", help="a shift set (repeatable)")
    return parser.parse_args(argv)


def soup_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (the others keep SoupOptions' defaults)."""
    given = {"methods": parse_methods(args.methods) if args.methods else None, "tie_rule": args.tie_rule,
             "device": args.device, "eval_workers": args.eval_workers, "greedy_repeats": args.greedy_repeats,
             "learned_steps": args.learned_steps, "outlier_z": args.outlier_z,
             "register_as": args.register_as, "register_method": args.register_method,
             "wiseft_alphas": _floats(args.wiseft_alphas), "wiseft_targets": _names(args.wiseft_targets)}
    return {k: v for k, v in given.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uri = absolute_sqlite(args.tracking_uri)
    try:
        options = soup_options(args)
        if args.ingredients:
            result = soup_files(uri, explicit_inputs(args), validate(SoupOptions, options, "soup"),
                                args.experiment or DEFAULT_EXPERIMENT)
        elif args.experiment:
            result = soup_experiment(uri, args.experiment, **options)
        else:
            raise UserError("give --experiment <sweep experiment> or --ingredients <checkpoint globs>")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result.outcome))
    print(f"\nsoup run {result.run_id} logged in experiment {result.experiment_id} at {args.tracking_uri}")
    return 0


def explicit_inputs(args: argparse.Namespace) -> ExplicitInputs:
    shift = {}
    for item in args.shift:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--shift {item!r}: use NAME=PATH, e.g. --shift sketch=/data/sketch.parquet")
        shift[name] = path
    return ExplicitInputs(args.ingredients, args.base, args.model, args.templates, None, args.heldout,
                          args.test, args.train, shift)


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--wiseft-alphas {text!r}: give numbers in [0, 1] separated by commas") from None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    sys.exit(main())
