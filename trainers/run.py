"""One training run without Ray: `python -m trainers.run --config train.yaml [--out DIR] [--set key=value]`.

The config is a TrainConfig (the training keys of a sweep file, docs/config.md). The run writes the
shared initialisation to `<out>/base`, trains with the one training loop, keeps the last epoch's
checkpoint in `<out>/checkpoint` (the format the soup stage reads) and every epoch's metrics in
`<out>/metrics.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.base import write_base_checkpoint
from trainers.config import TrainConfig, validate
from trainers.config_files import apply_overrides, parse_sets, read_config_file
from trainers.device import resolve_device
from trainers.errors import UserError
from trainers.loop import RunContext, fit


@dataclass
class RunOutcome:
    checkpoint: Path
    metrics: dict[str, float]


def load_config(path: str, overrides: list[str]) -> TrainConfig:
    """A TrainConfig from a YAML file and `key=value` overrides (values parsed as YAML)."""
    tree = read_config_file(path)
    return validate(TrainConfig, apply_overrides(tree, parse_sets(overrides)), source=str(path))


def run_training(cfg: TrainConfig, out: Path, device: torch.device) -> RunOutcome:
    """Prepare the base, train, keep the last checkpoint; returns where it is and the last metrics."""
    out.mkdir(parents=True, exist_ok=True)
    write_base_checkpoint(cfg, out / "base", device)
    history = out / "metrics.jsonl"
    history.write_text("")

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        with history.open("a") as stream:
            stream.write(json.dumps(metrics) + "\n")
        if checkpoint_dir:
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            shutil.copytree(checkpoint_dir, out / "checkpoint")

    result = fit(cfg, RunContext(base_dir=str(out / "base"), device=device, report=report, trial_id="run"))
    return RunOutcome(out / "checkpoint", result.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file of training keys (docs/config.md)")
    parser.add_argument("--out", default="soupsweep-run", help="directory for the base, checkpoint and metrics")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg, device = load_config(args.config, args.set), resolve_device(args.device, "--device")
        outcome = run_training(cfg, Path(args.out), device)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(outcome.metrics, indent=2))
    if outcome.checkpoint.is_dir():
        print(f"checkpoint: {outcome.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
