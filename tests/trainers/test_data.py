from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import encode_png

from trainers.config import DataConfig
from trainers.data.store import CLASSES_KEY, check_dataset, read_split, write_split
from trainers.data.synthetic import CLASSES, render
from trainers.errors import UserError


def test_generated_data_round_trips(demo_data):
    split = read_split(demo_data["train"], 32)
    assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
    assert split.classes == CLASSES
    assert sorted(split.labels.unique().tolist()) == [0, 1, 2, 3]
    assert check_dataset(DataConfig(train=demo_data["train"], val=demo_data["val"], heldout=demo_data["heldout"],
                                    test=demo_data["test"], shift={"sketch": demo_data["sketch"]})) == CLASSES


def test_demo_data_is_a_store_with_a_card(demo_data):
    card = json.loads((Path(demo_data["train"]).parent / "card.json").read_text())
    assert card["classes"] == CLASSES and card["splits"]["shift/sketch"]["path"] == "shift/sketch"
    assert card["splits"]["train"]["rows"] == 256 and card["splits"]["train"]["counts"]["circle"] == 64


def test_resizes_to_the_model_size(tmp_path):
    write_split(tmp_path / "big", render(torch.tensor([0, 1]), "photo", 48, torch.Generator()), [0, 1], CLASSES)
    assert read_split(str(tmp_path / "big"), 32).images.shape == (2, 3, 32, 32)


def test_a_single_parquet_file_of_png_images_still_reads(tmp_path):
    images = render(torch.tensor([0, 1, 2]), "photo", 32, torch.Generator())
    table = pa.table({"image": [encode_png(i).numpy().tobytes() for i in images], "label": pa.array([0, 1, 2], pa.int32())})
    pq.write_table(table.replace_schema_metadata({CLASSES_KEY: json.dumps(CLASSES).encode()}), tmp_path / "old.parquet")
    split = read_split(str(tmp_path / "old.parquet"), 32)
    assert torch.equal(split.images, images) and split.labels.tolist() == [0, 1, 2]  # PNG is lossless


def test_uri_and_local_path_read_the_same(demo_data):
    local, uri = read_split(demo_data["val"], 32), read_split("file://" + demo_data["val"], 32)
    assert torch.equal(local.images, uri.images) and torch.equal(local.labels, uri.labels)


def _data(demo_data, **changes) -> DataConfig:
    fields = {"train": demo_data["train"], "val": demo_data["val"], "heldout": demo_data["heldout"],
              "test": demo_data["test"]}
    return DataConfig(**{**fields, **changes})


def test_missing_path(demo_data, tmp_path):
    with pytest.raises(UserError, match="does not exist; check the path"):
        check_dataset(_data(demo_data, test=str(tmp_path / "nope.parquet")))


def test_label_outside_the_class_list(demo_data, tmp_path):
    table = pq.read_table(Path(demo_data["val"]) / "part-00000.parquet")
    labels = table.column("label").to_pylist()
    labels[1] = 9
    pq.write_table(table.set_column(1, "label", pa.array(labels, pa.int32())), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match=r"labels \[9\] outside the class list"):
        check_dataset(_data(demo_data, val=str(tmp_path / "bad.parquet")))


def test_class_missing_from_a_split_but_not_from_a_shift_set(demo_data, tmp_path):
    images = render(torch.tensor([0, 1]), "photo", 32, torch.Generator())
    write_split(tmp_path / "two", images, [0, 1], CLASSES)
    with pytest.raises(UserError, match=r"has no images of classes \['triangle', 'cross'\]"):
        check_dataset(_data(demo_data, test=str(tmp_path / "two")))
    assert check_dataset(_data(demo_data, shift={"two": str(tmp_path / "two")})) == CLASSES


def test_empty_split(demo_data, tmp_path):
    write_split(tmp_path / "empty", torch.zeros(0, 3, 32, 32, dtype=torch.uint8), [], CLASSES)
    with pytest.raises(UserError, match="holds no images; give a non-empty split"):
        check_dataset(_data(demo_data, val=str(tmp_path / "empty")))


def test_class_lists_must_agree(demo_data, tmp_path):
    other = tmp_path / "other.parquet"
    write_split(other, render(torch.tensor([0, 1]), "photo", 32, torch.Generator()), [0, 1], ["dog", "cat"])
    with pytest.raises(UserError, match="every split must use the same class list"):
        check_dataset(_data(demo_data, heldout=str(other)))


def test_empty_split_path(demo_data):
    with pytest.raises(UserError, match="data.heldout: no path given"):
        check_dataset(_data(demo_data, heldout=""))


def test_writing_a_split_again_replaces_its_shards_and_keeps_other_files(tmp_path):
    images = render(torch.tensor([0, 1, 2, 3]), "photo", 32, torch.Generator())
    write_split(tmp_path / "split", images, [0, 1, 2, 3], CLASSES, shard_bytes=1)  # one shard per image
    (tmp_path / "split" / "labels.txt").write_text("mine")
    write_split(tmp_path / "split", images[:1], [0], CLASSES)
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["labels.txt", "part-00000.parquet"]
    assert len(read_split(str(tmp_path / "split"), 32)) == 1  # no stale shard of the first write is read
