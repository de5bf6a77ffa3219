"""`python -m soup.greedy --export-open-clip DIR`: the chosen soup written as an open_clip model; an
existing DIR is refused before anything runs. (Each family's export is reloaded by open_clip alone
in tests/test_model_families.py.)"""
from __future__ import annotations

import json

import open_clip
import pytest
import torch

from soup import greedy
from tests.test_model_families import TINY_SPLITS, train
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_weights
from trainers.config import TrainConfig
from trainers.data.synthetic import write_demo_data


@pytest.fixture(scope="module")
def soup_inputs(tmp_path_factory):
    """(config, base dir, two ingredients of two steps each) of the tiny model on 8 training images."""
    tmp = tmp_path_factory.mktemp("export")
    data = write_demo_data(tmp / "data", sizes=TINY_SPLITS)
    cfg = TrainConfig.model_validate({"data": {s: data[s] for s in ("train", "val", "heldout", "test")},
                                      "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 0}})
    write_base_checkpoint(cfg, tmp / "base")
    return cfg, str(tmp / "base"), [train(cfg, tmp / "base", tmp / f"ft{s}", "ft", s) for s in (1, 2)]


def soup_args(soup_inputs, tmp_path, export) -> list[str]:
    cfg, base_dir, ingredients = soup_inputs
    return ["--ingredients", *[i.checkpoint for i in ingredients], "--base", base_dir, "--heldout",
            cfg.data.heldout, "--test", cfg.data.test, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
            "--device", "cpu", "--methods", "uniform", "--register-method", "uniform", "--export-open-clip", str(export)]


def test_export_open_clip_flag_writes_the_chosen_soup(soup_inputs, tmp_path, capsys):
    export = tmp_path / "exported"
    assert greedy.main(soup_args(soup_inputs, tmp_path, export)) == 0
    out = capsys.readouterr().out  # it said nothing of the export before
    assert f"the uniform soup as an open_clip model: {export}\n" in out and f'"local-dir:{export}"' in out
    info = json.loads((export / "soupsweep.json").read_text())
    assert info["soup_method"] == "uniform" and len(info["ingredients"]) == 2
    model = open_clip.create_model(f"local-dir:{export}")
    uniform = [load_weights(i.checkpoint) for i in soup_inputs[2]]
    expected = sum(w["visual.conv1.weight"] for w in uniform) / 2
    assert torch.allclose(model.visual.conv1.weight, expected, atol=1e-6)


def test_an_existing_directory_is_refused_before_anything_runs(soup_inputs, tmp_path, capsys):
    export = tmp_path / "mine"
    export.mkdir()
    (export / "notes.txt").write_text("keep me")
    assert greedy.main(soup_args(soup_inputs, tmp_path, export)) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in export.iterdir()] == ["notes.txt"] and not (tmp_path / "m.db").exists()
