from __future__ import annotations

import pytest
import torch

from trainers.config import DataConfig
from trainers.data.store import check_dataset, read_split, write_split
from trainers.data.synthetic import CLASSES, render
from trainers.errors import UserError


def test_generated_data_round_trips(demo_data):
    split = read_split(demo_data["train"], 32)
    assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
    assert split.classes == CLASSES
    assert sorted(split.labels.unique().tolist()) == [0, 1, 2, 3]
    assert check_dataset(DataConfig(train=demo_data["train"], val=demo_data["val"], heldout=demo_data["heldout"],
                                    test=demo_data["test"], shift={"sketch": demo_data["sketch"]})) == CLASSES


def test_resizes_to_the_model_size(tmp_path):
    write_split(tmp_path / "big.parquet", render(torch.tensor([0, 1]), "photo", 48, torch.Generator()),
                [0, 1], CLASSES)
    assert read_split(str(tmp_path / "big.parquet"), 32).images.shape == (2, 3, 32, 32)


def _data(demo_data, **changes) -> DataConfig:
    fields = {"train": demo_data["train"], "val": demo_data["val"], "heldout": demo_data["heldout"],
              "test": demo_data["test"]}
    return DataConfig(**{**fields, **changes})


def test_missing_path(demo_data, tmp_path):
    with pytest.raises(UserError, match="does not exist; check the path"):
        check_dataset(_data(demo_data, test=str(tmp_path / "nope.parquet")))


def test_label_outside_the_class_list(demo_data, tmp_path):
    images = render(torch.tensor([0, 1]), "photo", 32, torch.Generator())
    bad = tmp_path / "bad.parquet"
    write_split(bad, images, [0, 1], CLASSES)
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pq.read_table(bad)
    table = table.set_column(1, "label", pa.array([0, 9], pa.int32()))
    pq.write_table(table, bad)
    with pytest.raises(UserError, match=r"labels \[9\] outside the class list"):
        check_dataset(_data(demo_data, val=str(bad)))


def test_class_lists_must_agree(demo_data, tmp_path):
    other = tmp_path / "other.parquet"
    write_split(other, render(torch.tensor([0]), "photo", 32, torch.Generator()), [0], ["dog", "cat"])
    with pytest.raises(UserError, match="every split must use the same class list"):
        check_dataset(_data(demo_data, heldout=str(other)))


def test_empty_split_path(demo_data):
    with pytest.raises(UserError, match="data.heldout: no path given"):
        check_dataset(_data(demo_data, heldout=""))
