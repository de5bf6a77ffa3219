"""Soup fixtures: a base checkpoint and three tiny ingredients trained in-process (seconds), shared
by the soup tests; helpers to build the stage's inputs from them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from soup.inputs.manifest import FINISHED, Ingredient
from soup.methods.options import SoupOptions
from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from tests.conftest import data_section
from trainers.base import write_base_checkpoint
from trainers.checkpoint import read_meta
from trainers.config import TrainConfig
from trainers.loop import RunContext, fit


def train_ingredients(cfg: TrainConfig, base_dir: str, out: Path, seeds: list[int]) -> list[Ingredient]:
    rows = []
    for seed in seeds:
        target = out / f"trial{seed}"
        run_cfg = cfg.with_overrides({"seed": seed, "optim.lr": 2e-4 * (1 + seed % 3)})
        fit(run_cfg, RunContext(base_dir=base_dir, trial_id=f"trial{seed}",
                                report=lambda m, d, t=target: shutil.copytree(d, t, dirs_exist_ok=True)))
        rows.append(Ingredient(f"trial{seed}", FINISHED, str(target), read_meta(target)["base_checksum"],
                               mlflow_run_id=f"run-of-trial{seed}"))
    return rows


@pytest.fixture(scope="session")
def soup_inputs(demo_data, pretrained_file, tmp_path_factory):
    """(config, base checkpoint dir, three finished ingredients) of the tiny model on demo data."""
    tmp = tmp_path_factory.mktemp("soup")
    cfg = TrainConfig.model_validate({"data": data_section(demo_data), "model": {"pretrained": pretrained_file},
                                      "optim": {"epochs": 2, "warmup_steps": 2}})
    write_base_checkpoint(cfg, tmp / "base")
    return cfg, str(tmp / "base"), train_ingredients(cfg, str(tmp / "base"), tmp, [1, 2, 3])


def run_stage(ingredients, base_dir: str, workdir: Path, **options):
    """make_soups on a sweep's base checkpoint, as the pipeline calls it."""
    workdir.mkdir(parents=True, exist_ok=True)
    return make_soups(ingredients, base_from_checkpoint(base_dir, workdir), SoupOptions(**options), workdir)
