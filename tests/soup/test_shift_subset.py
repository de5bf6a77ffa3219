"""A shift set that covers only some classes: the soup stage projects its logits onto those classes."""
from __future__ import annotations

import torch

from soup.scoring.evaluation import Evaluator
from soup.scoring.splits import load_eval_sets
from tests.conftest import data_section
from trainers.config import DataConfig, ModelConfig
from trainers.data.store import read_split, write_split
from trainers.data.synthetic import CLASSES
from trainers.model import build_classifier


def test_subset_shift_set_logits_are_projected_onto_its_classes(demo_data, tmp_path):
    sketch = read_split(demo_data["sketch"], 32)
    keep = sketch.labels < 2  # circles and squares only
    write_split(tmp_path / "two", sketch.images[keep], sketch.labels[keep].tolist(), CLASSES,
                covers=CLASSES[:2])
    data = DataConfig.model_validate({**data_section(demo_data), "shift": {"two": str(tmp_path / "two"),
                                                                           "sketch": demo_data["sketch"]}})
    sets = load_eval_sets(data, 32, torch.device("cpu"))
    torch.manual_seed(0)
    evaluator = Evaluator(build_classifier(ModelConfig(), len(CLASSES)), sets, torch.device("cpu"), "fp32")
    logits = evaluator.predict_all()
    two, full = logits["shift/two"], logits["shift/sketch"]
    assert set(two.argmax(1).tolist()) <= {0, 1}
    assert (two[:, 2:] == -1e9).all() and (two[:, :2] > -1e3).all()
    assert (full > -1e3).all()  # a set that covers every class is left as it is
    assert torch.isfinite(torch.log_softmax(two, 1)[:, :2]).all()
