"""The compatibility matrix: a tiny version of each open_clip family (tests/families.py) through the
whole pipeline: zero-shot base, two steps of ft and of flyp, checkpoints, a uniform and a greedy
soup of the two, the uniform soup exported and reloaded by open_clip alone in another process (its
logits, and its text tower and tokenizer: the base's)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from soup.inputs.manifest import FINISHED, Ingredient
from soup.outputs.open_clip_export import export_open_clip
from tests.families import FAMILIES, write_tiny_config
from tests.soup.conftest import run_stage
from trainers.base import TEXT_TOWER, write_base_checkpoint
from trainers.checkpoint import load_checkpoint, read_meta
from trainers.config import TrainConfig
from trainers.data.synthetic import write_demo_data
from trainers.loop import RunContext, fit
from trainers.model import build_classifier, clip_with_tower, tokenizer_for

RELOAD = Path(__file__).with_name("open_clip_reload.py")
TINY_SPLITS = {"train": 8, "val": 8, "heldout": 8, "test": 8, "sketch": 8}  # 2 steps of 4 images


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict:
    paths = write_demo_data(tmp_path_factory.mktemp("tiny-data"), sizes=TINY_SPLITS)
    return {"train": paths["train"], "val": paths["val"], "heldout": paths["heldout"], "test": paths["test"],
            "shift": {"sketch": paths["sketch"]}}


def train(cfg: TrainConfig, base: Path, out: Path, method: str, seed: int) -> Ingredient:
    run_cfg, trial = cfg.with_overrides({"method.name": method, "seed": seed}), f"{method}-{seed}"
    fit(run_cfg, RunContext(base_dir=str(base), trial_id=trial,
                            report=lambda m, d: d and shutil.copytree(d, out, dirs_exist_ok=True)))
    assert read_meta(out)["step"] == 2
    return Ingredient(trial, FINISHED, str(out), read_meta(out)["base_checksum"], mlflow_run_id=f"run-{trial}")


def reload_outputs(export: Path, images: torch.Tensor, tmp: Path) -> dict[str, torch.Tensor]:
    """The logits of `images` and the class names' text embeddings, computed by open_clip alone."""
    save_file({"images": images}, str(tmp / "images.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, str(RELOAD), str(export), str(tmp / "images.safetensors"),
                    str(tmp / "out.safetensors")], check=True, cwd=tmp, env=env, timeout=300)
    return load_file(str(tmp / "out.safetensors"))


@torch.no_grad()
def base_text_embeddings(cfg: TrainConfig, base: Path, model, classes: list[str]) -> torch.Tensor:
    """The class names through the base's text tower (the one every soup keeps) and our tokenizer."""
    clip = clip_with_tower(cfg.model, model, load_file(str(base / TEXT_TOWER))).eval()
    return F.normalize(clip.encode_text(tokenizer_for(cfg.model)(classes)), dim=-1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_soups_and_exports(family, tiny_data, tmp_path):
    cfg = TrainConfig.model_validate({
        "data": tiny_data, "model": {"name": write_tiny_config(family, tmp_path), "templates": "simple"},
        "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 0, "lr": 1e-4}})
    write_base_checkpoint(cfg, tmp_path / "base")
    ingredients = [train(cfg, tmp_path / "base", tmp_path / m, m, seed) for seed, m in enumerate(["ft", "flyp"])]
    outcome = run_stage(ingredients, str(tmp_path / "base"), tmp_path / "work",
                        methods=["uniform", "greedy"], bn_images=8)
    soups = {r.name: r for r in outcome.results}
    assert len(soups["uniform"].members) == 2 and soups["greedy"].members
    export = export_open_clip(soups["uniform"].weights, tmp_path / "export")
    soup = load_checkpoint(soups["uniform"].weights)
    model = build_classifier(cfg.model, len(soup.meta["classes"]))
    model.load_state_dict(soup.state_dict)
    size = model.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(images)
    theirs = reload_outputs(export, images, tmp_path)
    assert torch.allclose(theirs["logits"], ours, atol=1e-4)
    text = base_text_embeddings(cfg, tmp_path / "base", model, soup.meta["classes"])
    assert torch.allclose(theirs["text"], text, atol=1e-4)
