"""The soup stage end to end, in its two forms:

- for a sweep recorded in MLflow: experiment -> sweep run -> manifest and base -> soups -> soup run
  (a child of the sweep run);
- for explicit checkpoints, without any sweep: files -> soups -> a soup run in the experiment named.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Experiment, Run
from mlflow.tracking import MlflowClient

from soup.inputs.explicit import ExplicitInputs, explicit_base, explicit_ingredients
from soup.inputs.manifest import Ingredient, ingredients_from_runs, manifest_exists, read_manifest
from soup.methods.options import SoupOptions
from soup.methods.spec import NEEDS_BASE
from soup.inputs.records import TAG_BASE, TAG_MANIFEST, find_experiment, require_sweep_run
from soup.outputs.soup_run import log_soup_run, soup_run
from soup.inputs.base import base_from_checkpoint
from soup.inputs.screening import require_usable
from soup.make import make_soups
from soup.outputs.outcome import SoupOutcome
from trainers.config import validate
from trainers.errors import UserError
from trainers.tracking import open_experiment

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "soupsweep-soups"


@dataclass
class SoupRun:
    outcome: SoupOutcome
    experiment_id: str
    run_id: str


def soup_experiment(tracking_uri: str, experiment: str, methods: list[str] | None = None, tie_rule: str = ">=",
                    device: str = "auto", greedy_start: dict | None = None, **options: Any) -> SoupRun:
    """Run the soup stage on the sweep recorded in `experiment` (id or name); log a new soup run.
    `options` are any other SoupOptions fields (a sweep passes its whole `soup` section), and
    `greedy_start` its anytime soup ({members, trace}), which the greedy soup starts from."""
    chosen = _options({**options, "tie_rule": tie_rule, "device": device,
                       **({"methods": methods} if methods is not None else {})})
    client = MlflowClient(tracking_uri)
    found = find_experiment(client, experiment)
    sweep_run = require_sweep_run(client, found)
    ingredients, manifest = sweep_ingredients(client, found, sweep_run)
    require_usable(ingredients)  # before reading the base: a sweep that failed early may have none
    with tempfile.TemporaryDirectory(prefix="soupsweep-soup-") as tmp:
        workdir = Path(tmp)
        base = base_from_checkpoint(sweep_run.data.tags[TAG_BASE], workdir)
        with soup_run(client, found.experiment_id, sweep_run.info.run_id) as run_id:
            outcome = make_soups(ingredients, base, chosen, workdir, greedy_start=greedy_start)
            log_soup_run(client, run_id, outcome, chosen, {"manifest": manifest})
    return SoupRun(outcome, found.experiment_id, run_id)


def sweep_ingredients(client: MlflowClient, experiment: Experiment, sweep_run: Run) -> tuple[list[Ingredient], str]:
    """The sweep's manifest and where it came from. A sweep that stopped before writing it (its driver
    died) is rebuilt from what its trial runs recorded: nothing is written, its storage stays the sweep's."""
    manifest = sweep_run.data.tags[TAG_MANIFEST]
    if manifest_exists(manifest):
        return read_manifest(manifest), manifest
    ingredients = ingredients_from_runs(client, experiment.experiment_id, sweep_run.info.run_id)
    if not ingredients:
        raise UserError(f"the sweep of experiment {experiment.name!r} stopped before writing its manifest "
                        f"({manifest}) and before any trial run was recorded: there is nothing to soup; run "
                        f"`python -m sweep.run --resume {experiment.name}` or a new sweep")
    log.warning("the sweep of experiment %r stopped before writing its manifest %s: souping what its %d trial "
                "runs recorded (`python -m sweep.run --resume %s` finishes the sweep and writes it)",
                experiment.name, manifest, len(ingredients), experiment.name)
    return ingredients, f"rebuilt from the trial runs (no {manifest})"


def soup_files(tracking_uri: str, inputs: ExplicitInputs, options: SoupOptions,
               experiment: str = DEFAULT_EXPERIMENT) -> SoupRun:
    """The soup stage on explicit checkpoints (globs of directories or weight files), no sweep needed;
    the soup run is logged in `experiment` (created if missing)."""
    ingredients = explicit_ingredients(inputs.patterns)
    with tempfile.TemporaryDirectory(prefix="soupsweep-soup-") as tmp:
        workdir = Path(tmp)
        base = explicit_base(inputs, ingredients, workdir)
        options = _without_base_methods(options) if base.file is None else options
        client = MlflowClient(tracking_uri)
        experiment_id = open_experiment(client, experiment)
        with soup_run(client, experiment_id, None) as run_id:
            outcome = make_soups(ingredients, base, options, workdir)
            log_soup_run(client, run_id, outcome, options,
                         {"ingredient_patterns": ",".join(inputs.patterns), "base": inputs.base or ""})
    return SoupRun(outcome, experiment_id, run_id)


def _options(values: dict[str, Any]) -> SoupOptions:
    return validate(SoupOptions, values, "soup")


def _without_base_methods(options: SoupOptions) -> SoupOptions:
    """Without --base, drop the methods that need the zero-shot model if they were not asked for by name."""
    if options.model_fields_set & {"methods"}:
        return options  # asked for explicitly: let the method say what it needs
    kept = [m for m in options.methods if m not in NEEDS_BASE]
    log.warning("no --base given: skipping %s, which need the shared initialisation",
                ", ".join(sorted(NEEDS_BASE & set(options.methods))))
    return options.model_copy(update={"methods": kept})

