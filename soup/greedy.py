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
import sys
from typing import Any, get_origin

from soup.inputs.explicit import ExplicitInputs
from trainers.tracking import absolute_sqlite, check_tracking_uri, default_tracking_uri, ui_url
from soup.methods.options import SoupOptions
from soup.methods.spec import DEFAULT_METHODS, METHODS, PARAMS, SOUP_METHODS, parse_methods
from soup.pipeline import DEFAULT_EXPERIMENT, soup_experiment, soup_files
from soup.outputs.open_clip_export import export_line
from soup.outputs.report import format_spread, format_table
from trainers.config import validate
from trainers.prompts import TEMPLATES
from trainers.errors import UserError
from trainers.architectures import quiet_open_clip
from trainers.owner import exit_on_sigterm



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soup.greedy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", help="MLflow experiment id or name of the sweep; with --ingredients, the "
                        f"experiment the soup run is logged in (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--tracking-uri", default=default_tracking_uri(),
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    method = parser.add_argument_group("methods")
    method.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} "
                        f"(default: {','.join(DEFAULT_METHODS)})")
    method.add_argument("--tie-rule", choices=[">=", ">"], help="greedy: keep a candidate on a tie (>=, the "
                        "paper's recipe, default) or not (>)")
    method.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--verbose", action="store_true", help="also print open_clip's log lines on building models")
    method.add_argument("--eval-workers", help="Ray workers that evaluate the ingredients in parallel: auto "
                        "(default: one per free GPU when Ray is running or RAY_ADDRESS is set and at least two "
                        "are free, else none), 0 (in this process) or N (N workers, one GPU each when the "
                        "cluster has GPUs; starts a local Ray if none is running)")
    method.add_argument("--outlier-z", type=float, help="weight screen: leave out an ingredient whose robust "
                        "z-score of its distance from the base exceeds this (default 3.5; 0: off)")
    method.add_argument("--register-as", help="register the soup in the MLflow model registry under this name")
    method.add_argument("--register-method", help=f"which soup to register and export: one of "
                        f"{','.join(SOUP_METHODS)} (default greedy)")
    method.add_argument("--export-open-clip", metavar="DIR", help="write that soup as a whole open_clip model "
                        "into the new directory DIR (see docs/models.md)")
    add_method_flags(parser)
    files = parser.add_argument_group("explicit ingredients (no sweep)")
    files.add_argument("--ingredients", nargs="+", metavar="PATTERN",
                       help="globs of checkpoint directories or weight files (.safetensors, .pt, .pth, .bin)")
    files.add_argument("--base", help="the shared initialisation (zero-shot model): checkpoint dir or weights file")
    files.add_argument("--model", help="open_clip architecture of weights without meta.json (e.g. ViT-B-32)")
    files.add_argument("--templates", choices=list(TEMPLATES), help="prompts for zero-shot heads")
    for split in ("heldout", "test", "train"):
        files.add_argument(f"--{split}", help=f"{split} split (Parquet)" + (", only to recompute BatchNorm "
                           "statistics" if split == "train" else ""))
    files.add_argument("--shift", action="append", default=[], metavar="NAME=PATH", help="a shift set (repeatable)")
    return parser.parse_args(argv)


def soup_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (the others keep SoupOptions' defaults)."""
    given = {"methods": parse_methods(args.methods) if args.methods else None, "tie_rule": args.tie_rule,
             "device": args.device, "eval_workers": args.eval_workers, "outlier_z": args.outlier_z,
             "register_as": args.register_as, "register_method": args.register_method,
             "export_open_clip": args.export_open_clip}
    for params in PARAMS:
        for name, field in params.model_fields.items():
            value = getattr(args, name)
            given[name] = value if value is None or get_origin(field.annotation) is not list else _items(value)
    return {k: v for k, v in given.items() if v is not None}


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per method parameter (soup.methods.spec), in a group per method: --greedy-repeats, ..."""
    for params in PARAMS:
        methods = ", ".join(n for n, s in METHODS.items() if s.params is params)
        group = parser.add_argument_group(f"{methods} (values as in the sweep config's soup section; "
                                          "lists comma-separated)")
        for name, field in params.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            group.add_argument("--" + name.replace("_", "-"), dest=name, metavar="VALUE",
                               help=f"{field.description} (default {shown})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_open_clip(args.verbose)
    exit_on_sigterm()
    uri = absolute_sqlite(args.tracking_uri)
    try:
        options = soup_options(args)
        check_tracking_uri(uri, existing=not args.ingredients)  # --experiment reads a sweep's records
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
    except KeyboardInterrupt:  # the soup run ended FAILED and the temporary files are gone: no traceback
        print("interrupted: a soup run it had opened ends FAILED, nothing half-written is left; run the "
              "same command again", file=sys.stderr)
        return 130
    print(format_table(result.outcome))
    spread = format_spread(result.outcome)
    if spread:
        print(spread)
    print(f"\nsoup run {result.run_id} logged in experiment {result.experiment_id} at {args.tracking_uri}\n"
          f"  {ui_url(uri, result.experiment_id)}")
    if args.export_open_clip:
        print(export_line(args.export_open_clip, args.register_method or "greedy"))
    return 0


def explicit_inputs(args: argparse.Namespace) -> ExplicitInputs:
    shift = {}
    for item in args.shift:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--shift {item!r}: use NAME=PATH, e.g. --shift sketch=/data/sketch.parquet")
        shift[name] = path
    return ExplicitInputs(args.ingredients, base=args.base, model=args.model, templates=args.templates,
                          heldout=args.heldout, test=args.test, train=args.train, shift=shift)


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    sys.exit(main())
