"""The embedded default: the demo config with generated data, written once into the working directory.

The demo's seed (`python -m sweep.run --seed N`, default 0) draws its generated data, its search
(`search.seed`, which draws each trial's training seed) and the base `seed`; the stand-in pretrained
weights are the same for every seed, as CLIP's would be. Seed 0 is the demo the README shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainers.data.synthetic import SPLIT_SIZES, demo_split_paths, write_demo_data
from trainers.demo_pretrain import pretrain_demo_clip

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
DEMO_DATA_DIR = "soupsweep-demo-data"
PRETRAINED_FILE = "tiny-clip-pretrained.safetensors"


def demo_config(data_dir: str | Path = DEMO_DATA_DIR, pretrained: bool = True) -> dict[str, Any]:
    """The demo YAML as a dict, with its generated data and stand-in pretrained weights made if missing
    (without `pretrained`: random towers, nothing pretrained)."""
    make_demo_files(data_dir, pretrained)
    return demo_tree(data_dir, pretrained)


def demo_data_dir(seed: int = 0) -> str:
    """Where the demo of `seed` keeps its data: soupsweep-demo-data, soupsweep-demo-data-seed<N> for N != 0
    (a directory per seed: a store made with one seed is never taken for another's)."""
    return DEMO_DATA_DIR if seed == 0 else f"{DEMO_DATA_DIR}-seed{seed}"


def demo_tree(data_dir: str | Path = DEMO_DATA_DIR, pretrained: bool = True, seed: int = 0) -> dict[str, Any]:
    """The demo YAML as a dict, pointing at where make_demo_files puts the data and the weights (nothing
    is made here: overrides are validated before the minutes that making them takes); `seed` is the
    search's and the base one (the data's is make_demo_files')."""
    data_dir = Path(data_dir).resolve()
    paths = demo_split_paths(data_dir)
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["model"]["pretrained"] = str(data_dir / PRETRAINED_FILE) if pretrained else None
    config["data"] = {split: paths[split] for split in SPLIT_SIZES}
    config["data"]["shift"] = {"sketch": paths["sketch"]}
    config["search"]["seed"] = config["seed"] = seed  # seed 0: the values the YAML and the defaults give
    return config


def make_demo_files(data_dir: str | Path = DEMO_DATA_DIR, pretrained: bool = True, seed: int = 0) -> None:
    """Generated data (drawn from `seed`) and stand-in pretrained weights (the same for every seed);
    made on first use, ~15 s on a laptop CPU, then reused."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "card.json").is_file():  # the card is written last: its presence means a whole store
        write_demo_data(data_dir, seed=seed)
    if pretrained and not (data_dir / PRETRAINED_FILE).is_file():
        pretrain_demo_clip(data_dir / PRETRAINED_FILE)
