"""`python -m sweep.run --seed N`: the demo's seed draws its data, its search and the base seed; seed 0
(the default) is the demo as it was; with --config it is a one-line mistake."""
from __future__ import annotations

import json

import yaml

from sweep import run
from sweep.demo import DEMO_DATA_DIR, demo_data_dir, make_demo_files


def printed_config(capsys, *args: str) -> dict:
    assert run.main(["--print-config", *args]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_seed_draws_the_search_and_the_base_seed_and_names_its_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default, zero, three = (printed_config(capsys, *args) for args in ([], ["--seed", "0"], ["--seed", "3"]))
    assert default == zero and default["search"]["seed"] == default["seed"] == 0
    assert default["data"]["train"] == str(tmp_path / DEMO_DATA_DIR / "train")
    assert three["search"]["seed"] == three["seed"] == 3
    assert three["data"]["train"] == str(tmp_path / f"{DEMO_DATA_DIR}-seed3" / "train")
    assert {k: v for k, v in three.items() if k not in ("seed", "search", "data", "model")} == \
        {k: v for k, v in default.items() if k not in ("seed", "search", "data", "model")}
    assert list(tmp_path.iterdir()) == []  # printing makes no data


def test_the_seed_draws_the_generated_data(tmp_path):
    shards = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_demo_files(tmp_path / name, pretrained=False, seed=seed)
        card = json.loads((tmp_path / name / "card.json").read_text())
        shards[name] = {split: entry["shards"] for split, entry in card["splits"].items()}
    assert shards["a"] == shards["b"] and shards["a"]["train"] != shards["c"]["train"]
    assert demo_data_dir(0) == DEMO_DATA_DIR and demo_data_dir(1) != DEMO_DATA_DIR


def test_a_seed_with_a_config_or_below_0_is_one_line_before_anything_is_made(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text("model: {name: soupsweep-tiny-vit}\n")
    assert run.main(["--config", "sweep.yaml", "--seed", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --seed is the demo's seed: with --config, set search.seed and "
                                               "seed in the YAML or with --set search.seed=N --set seed=N")
    assert run.main(["--seed", "-1"]) == 2
    assert "seed: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.yaml"]
