"""One training run without Ray: `python -m trainers.run --config FILE [--out DIR] [--set key=value]
[--tracking-uri URI]`.

FILE holds training keys (docs/config.md), or is a whole sweep file (what `python -m sweep.run --config`
takes): then its preset applies, its search space and the other sweep-only sections are left aside with a
note, and its mlflow section says where the run is logged. The run writes the shared initialisation to
`<out>/base`, trains with the one training loop, keeps the last epoch's checkpoint in `<out>/checkpoint`
(the format the soup stage reads) and every epoch's metrics in `<out>/metrics.jsonl`, then evaluates the
test and shift sets. With a tracking URI (--tracking-uri or the file's mlflow section) it is an MLflow run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers import metrics as M
from trainers.architectures import quiet_open_clip
from trainers.base import check_pretrained_weights, write_base_checkpoint
from trainers.config import TrainConfig
from trainers.data.store import check_dataset
from trainers.device import resolve_device
from trainers.errors import UserError
from trainers.loop import RunContext, evaluate_splits, fit
from trainers.owner import exit_on_sigterm
from trainers.run_config import RunConfig, load_run_config
from trainers.run_record import RunRecord, run_record
from trainers.tracking import check_tracking_uri, ui_url

COLUMNS = (("top1", "top-1 %", 100), ("macro_f1", "macro-F1 %", 100), ("ece", "ECE", 1), ("loss", "loss", 1))


@dataclass
class RunOutcome:
    checkpoint: Path
    metrics: dict[str, float]  # the last epoch's, then test/* and shift/<name>/* of its weights
    record: RunRecord | None


def check_inputs(run: RunConfig, out: Path) -> None:
    """What a user can get wrong, found before anything is created: the data, the tracking URI, the
    model and its weights, the output directory."""
    check_dataset(run.train.data)
    if run.mlflow is not None:
        check_tracking_uri(run.mlflow.tracking_uri)
    check_pretrained_weights(run.train.model)  # model.name first, then the weights load into it
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty directory; give a new one (a run never "
                        "overwrites files)")


def run_training(run: RunConfig, out: Path, device: torch.device) -> RunOutcome:
    """Prepare the base, train (an MLflow run when tracked), keep the last checkpoint, evaluate test and shifts."""
    cfg = run.train
    out.mkdir(parents=True, exist_ok=True)
    with run_record(run.mlflow, run.experiment, cfg, f"run-{time.strftime('%Y%m%d-%H%M%S')}") as record:
        write_base_checkpoint(cfg, out / "base", device)
        result = fit(cfg, RunContext(base_dir=str(out / "base"), device=device, report=reporter(out, record),
                                     trial_id="run"))
        metrics = dict(result.metrics)
        if metrics.get(M.DIVERGED):
            if record is not None:
                record.status = "FAILED"
        else:
            final = evaluate_splits(result.model, reported_splits(cfg), cfg.precision, device)
            metrics.update(final)
            if record is not None:
                record.log(final, int(metrics[M.EPOCH]))
    return RunOutcome(out / "checkpoint", metrics, record)


def reporter(out: Path, record: RunRecord | None):
    """The loop's per-epoch report: a line of metrics.jsonl, the checkpoint in <out>/checkpoint, MLflow."""
    history = out / "metrics.jsonl"
    history.write_text("")

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        with history.open("a") as stream:
            stream.write(json.dumps(metrics) + "\n")
        if record is not None:
            record.log(metrics, int(metrics[M.EPOCH]))
        if checkpoint_dir:
            staged, previous = out / ".checkpoint-partial", out / ".checkpoint-previous"
            for leftover in (staged, previous):
                shutil.rmtree(leftover, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staged)  # complete before it replaces the last one
            if (out / "checkpoint").is_dir():  # moved aside whole, not deleted file by file: a kill meanwhile
                (out / "checkpoint").rename(previous)  # leaves no half-deleted checkpoint
            staged.rename(out / "checkpoint")
            shutil.rmtree(previous, ignore_errors=True)
            if record is not None:
                record.checkpoint(out / "checkpoint")

    return report


def reported_splits(cfg: TrainConfig) -> dict[str, str]:
    """test and every shift set (held-out selects soup ingredients: a single run has nothing to select)."""
    return {name: path for name, path in cfg.data.splits().items() if name == "test" or name.startswith("shift/")}


def format_metrics(metrics: dict[str, float]) -> str:
    """val (the last epoch), test and the shift sets, one row each."""
    sets = ["val", "test", *sorted({k.rsplit("/", 1)[0] for k in metrics if k.startswith("shift/")})]
    width = max(len(s) for s in sets) + 2
    lines = ["set".ljust(width) + "".join(f"{title:>12}" for _, title, _ in COLUMNS)]
    for name in (s for s in sets if f"{s}/top1" in metrics):
        cells = (metrics.get(f"{name}/{key}") for key, _, _ in COLUMNS)
        lines.append(name.ljust(width) + "".join(
            f"{'-' if v is None else f'{v * scale:.2f}' if scale == 100 else f'{v:.4f}':>12}"
            for v, (_, _, scale) in zip(cells, COLUMNS)))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML of training keys, or a sweep file (docs/config.md)")
    parser.add_argument("--out", default="soupsweep-run", help="a new directory for the base, checkpoint and metrics")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="log the run to this MLflow tracking URI (instead of the file's "
                        "mlflow.tracking_uri); without it and without an mlflow section nothing is logged")
    parser.add_argument("--verbose", action="store_true", help="also print open_clip's messages on building models")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_open_clip(args.verbose)
    exit_on_sigterm()
    try:
        run = load_run_config(args.config, args.set, args.tracking_uri)
        device, out = resolve_device(args.device, "--device"), Path(args.out)
        check_inputs(run, out)
        if run.note():
            print(run.note(), flush=True)
        outcome = run_training(run, out, device)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    diverged = bool(outcome.metrics.get(M.DIVERGED))
    print(f"the training loss went non-finite at epoch {int(outcome.metrics[M.EPOCH])}: no checkpoint, nothing "
          "evaluated (lower optim.lr, or set optim.grad_clip)" if diverged else format_metrics(outcome.metrics))
    if outcome.checkpoint.is_dir():
        print(f"checkpoint: {outcome.checkpoint}")
    if outcome.record is not None:
        uri = run.mlflow.tracking_uri
        print(f"MLflow run {outcome.record.run_id} in experiment {run.experiment!r} at {uri}; browse it with: "
              + (f"mlflow ui --backend-store-uri {uri}, then " if not uri.startswith(("http://", "https://")) else "")
              + ui_url(uri, outcome.record.experiment_id))
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
