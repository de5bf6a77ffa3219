"""The embedded default: the demo config with generated data, written once into the working directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainers.data.synthetic import SPLIT_SIZES, write_demo_data

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
DEMO_DATA_DIR = "soupsweep-demo-data"


def demo_config(data_dir: str | Path = DEMO_DATA_DIR) -> dict[str, Any]:
    """The demo YAML as a dict, its data section pointing at generated data (generated if missing)."""
    data_dir = Path(data_dir).resolve()
    splits = [*SPLIT_SIZES, "sketch"]
    if not all((data_dir / f"{split}.parquet").is_file() for split in splits):
        write_demo_data(data_dir)
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["data"] = {split: str(data_dir / f"{split}.parquet") for split in SPLIT_SIZES}
    config["data"]["shift"] = {"sketch": str(data_dir / "sketch.parquet")}
    return config
