"""python -m sweep.run [--config sweep.yaml | --seed N] [--cluster NAME] [--set KEY=VALUE ...]

Runs a hyper-parameter sweep of CLIP fine-tuning with Ray Tune (each trial trained with DDP by Ray
Train), then the soup stage, and records everything in MLflow. Without --config it runs the
embedded demo: a tiny model on generated data, on a local Ray cluster, in a few minutes on CPU;
--seed N draws the demo's data, search and training from another seed (default 0).
Under `ray job submit` (RAY_ADDRESS set) or after `ray start`, it attaches to that cluster.
--cluster applies a cluster profile (clusters/profiles/NAME.yaml: resources, concurrency, storage,
MLflow) between the config file and the --set overrides.
"""
from __future__ import annotations

import argparse
import logging
import sys

import yaml

from trainers.tracking import absolute_sqlite, default_tracking_uri, ui_url
from soup.outputs.open_clip_export import export_line
from soup.outputs.report import format_spread, format_table
from sweep.config import SweepConfig
from trainers.architectures import quiet_open_clip
from sweep.demo import demo_data_dir, demo_tree, make_demo_files
from sweep.driver import SweepOutcome, resume_sweep, run_sweep
from sweep.profiles import PROFILES_DIR, load_profile
from trainers.config import validate
from trainers.config_files import apply_overrides, parse_sets, read_config_file
from trainers.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sweep.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="sweep YAML (keys: docs/config.md); default: the embedded demo")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="the demo's seed (without --config): its generated data (in soupsweep-demo-data-seedN), "
                             "search.seed (which draws each trial's training seed) and seed; default 0, the demo "
                             "the README shows. The stand-in pretrained weights are the same for every seed")
    parser.add_argument("--cluster", metavar="NAME",
                        help=f"cluster profile applied after the config file, before --set: one of {PROFILES_DIR}/*.yaml "
                             "(e.g. local, aws-1gpu, aws-8gpu, k8s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key, e.g. --set optim.lr=1e-5 --set search.num_samples=8 "
                             "(VALUE is parsed as YAML); repeatable")
    parser.add_argument("--verbose", action="store_true",
                        help="print Ray's, Tune's and the workers' output here instead of in the sweep's log file")
    parser.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    parser.add_argument("--resume", metavar="EXPERIMENT",
                        help="continue the sweep recorded in this MLflow experiment (id or name) after its "
                             "driver died: finished trials are kept, interrupted ones resume from checkpoints")
    parser.add_argument("--tracking-uri", default=default_tracking_uri(),
                        help="with --resume: where the sweep is recorded (default: $MLFLOW_TRACKING_URI "
                             "or sqlite:///mlflow.db)")
    return parser.parse_args(argv)


def load_config(path: str | None, sets: list[str], cluster: str | None = None, seed: int | None = None) -> SweepConfig:
    """YAML file (or the demo of `seed`) + cluster profile + --set overrides, validated into a SweepConfig."""
    if path is None:
        seed = seed or 0
        tree = demo_tree(demo_data_dir(seed), seed=seed)  # its files are made once the overrides are valid
    elif seed is not None:
        raise UserError("--seed is the demo's seed: with --config, set search.seed and seed in the YAML "
                        "or with --set search.seed=N --set seed=N")
    else:
        tree = read_config_file(path)
    overrides = given = parse_sets(sets)
    if cluster is not None:
        overrides = {**load_profile(cluster, skip=given), **given}
    return validate(SweepConfig, apply_overrides(tree, overrides), source=path or "demo config", overrides=given)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_open_clip(args.verbose)
    try:
        if args.resume:
            outcome = resume_sweep(absolute_sqlite(args.tracking_uri), args.resume, args.verbose)
        else:
            cfg = load_config(args.config, args.set, args.cluster, args.seed)
            if args.print_config:
                print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
                return 0
            if args.config is None:
                make_demo_files(demo_data_dir(args.seed or 0), seed=args.seed or 0)
            outcome = run_sweep(cfg, args.verbose)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(outcome)
    return 0


def print_summary(outcome: SweepOutcome) -> None:
    uri = outcome.tracking_uri
    print("\n" + format_table(outcome.soup.outcome))
    spread = format_spread(outcome.soup.outcome)
    if spread:
        print(spread)
    local = not uri.startswith(("http://", "https://"))
    print(f"\nMLflow experiment {outcome.experiment!r} (id {outcome.experiment_id}); browse it with:\n"
          + (f"  mlflow ui --backend-store-uri {uri}\n" if local else "")
          + f"  {ui_url(uri, outcome.experiment_id)}\n"
          f"redo the soup stage with:\n"
          f"  python -m soup.greedy --experiment {outcome.experiment} --tracking-uri {uri}")
    if outcome.soup_options.export_open_clip:
        print(export_line(outcome.soup_options.export_open_clip, outcome.soup_options.register_method))


if __name__ == "__main__":
    sys.exit(main())
