"""The soup stage for a sweep recorded in MLflow: experiment -> sweep run -> manifest -> soups -> soup run."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from mlflow.tracking import MlflowClient

from soup.ingredients import read_manifest
from soup.methods import TieRule
from soup.records import TAG_BASE, TAG_MANIFEST, find_experiment, require_sweep_run
from soup.report import log_soup_run
from soup.stage import SoupOutcome, make_soups

log = logging.getLogger(__name__)


@dataclass
class SoupRun:
    outcome: SoupOutcome
    experiment_id: str
    run_id: str


def soup_experiment(tracking_uri: str, experiment: str, methods: list[str], tie_rule: TieRule = ">=",
                    device: str = "auto") -> SoupRun:
    """Run the soup stage on the sweep recorded in `experiment` (id or name); log a new soup run."""
    client = MlflowClient(tracking_uri)
    found = find_experiment(client, experiment)
    sweep_run = require_sweep_run(client, found)
    tags = sweep_run.data.tags
    ingredients = read_manifest(tags[TAG_MANIFEST])
    outcome = make_soups(ingredients, tags[TAG_BASE], methods, _device(device), tie_rule)
    params = {"methods": ",".join(methods), "tie_rule": tie_rule, "manifest": tags[TAG_MANIFEST]}
    run_id = log_soup_run(client, found.experiment_id, sweep_run.info.run_id, outcome, params)
    return SoupRun(outcome, found.experiment_id, run_id)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
