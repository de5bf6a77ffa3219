"""`python -m trainers.data.build` on generated image files: folders, manifests, carve-outs, shards and the
card, and the problems a user can meet (a corrupt file, a label not in the class list, a class missing from a
split, an empty split)."""
from __future__ import annotations

import hashlib
import json

import io

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.trainers.images import corrupt, image_folder, write_image
from trainers.config import DataConfig
from trainers.data import build
from trainers.data.build import BuildOptions, build_store
from trainers.data.cache import load_eval_set
from trainers.data.store import check_dataset, open_shards, read_classes, read_columns, read_covers
from trainers.errors import UserError

TINY = BuildOptions(size=12, shard_bytes=1500, row_group_rows=4, workers=2)  # several shards per split
CLASSES = {"ant": 9, "bee": 9, "cat": 9}


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    image_folder(root / "src", CLASSES)
    corrupt(root / "src" / "ant" / "broken.jpg")
    (root / "src" / "bee" / "notes.txt").write_text("not an image")
    return root, build_store(str(root / "src"), str(root / "store"), TINY)


def test_folder_becomes_carved_sharded_splits_with_a_card(folder_store):
    root, card = folder_store
    assert card["classes"] == ["ant", "bee", "cat"]
    assert set(card["splits"]) == {"train", "val", "heldout", "test"}
    for split in ("val", "heldout", "test"):  # stratified: one image of each class per carved split
        assert card["splits"][split]["counts"] == {"ant": 1, "bee": 1, "cat": 1}
    assert card["splits"]["train"]["counts"] == {"ant": 6, "bee": 6, "cat": 6}  # ant: 10 files, 3 carved, 1 broken
    assert json.loads((root / "store" / "card.json").read_text()) == card
    train = card["splits"]["train"]["shards"]
    assert len(train) > 1 and sum(s["rows"] for s in train) == 18
    for shard in train:
        data = (root / "store" / "train" / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]


def test_corrupt_and_foreign_files_are_listed_not_dropped(folder_store):
    _, card = folder_store
    reasons = {entry["source"].rsplit("/", 1)[-1]: entry["reason"] for entry in card["skipped"]}
    assert set(reasons) == {"broken.jpg", "notes.txt"}
    assert "not a decodable image" in reasons["broken.jpg"] and "not an image" in reasons["notes.txt"]


def test_images_are_jpeg_with_the_short_side_resized(folder_store):
    root, _ = folder_store
    table = read_columns(str(root / "store" / "train"), ["image", "class_name", "source", "label"])
    for blob, source in zip(table.column("image").to_pylist(), table.column("source").to_pylist()):
        stored, original = Image.open(io.BytesIO(blob)), Image.open(source)
        assert stored.format == "JPEG" and min(stored.size) == 12
        assert abs(stored.width / stored.height - original.width / original.height) < 0.1  # aspect kept
    assert read_classes(str(root / "store" / "test")) == ["ant", "bee", "cat"]


def test_the_carve_out_is_deterministic(folder_store, tmp_path):
    root, card = folder_store
    again = build_store(str(root / "src"), str(tmp_path / "again"), TINY)

    def sources(path):
        return sorted(read_columns(str(path / "heldout"), ["source"]).column("source").to_pylist())

    assert sources(root / "store") == sources(tmp_path / "again")
    assert again["splits"]["train"]["shards"] == card["splits"]["train"]["shards"]  # same bytes, same checksums


def test_manifest_with_a_shift_set_covering_some_classes(tmp_path):
    rows = ["path,label,split,domain"]
    for i, (label, split) in enumerate([("ant", "train"), ("bee", "train"), ("ant", "train"), ("bee", "train"),
                                        ("ant", "val"), ("bee", "val"), ("ant", "heldout"), ("bee", "heldout"),
                                        ("ant", "test"), ("bee", "test"), ("bee", "shift/night")]):
        write_image(tmp_path / "imgs" / f"{i}.jpg", i)
        rows.append(f"imgs/{i}.jpg,{label},{split},{'night' if 'shift' in split else 'day'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows))
    out = f"file://{tmp_path / 'store'}"  # through pyarrow.fs, as s3:// or gs:// would be
    card = build_store(str(tmp_path / "manifest.csv"), out, TINY)
    assert card["splits"]["shift/night"]["covers"] == ["bee"]
    night = f"{out}/shift/night"
    assert read_covers(night) == ["bee"] and read_covers(f"{out}/test") is None
    assert read_columns(night, ["domain"]).column("domain").to_pylist() == ["night"]
    data = DataConfig(train=f"{out}/train", val=f"{out}/val", heldout=f"{out}/heldout", test=f"{out}/test",
                      shift={"night": night})
    assert check_dataset(data) == ["ant", "bee"]  # a subset is fine for a shift set
    logits = load_eval_set(night, 8, torch.device("cpu")).project(torch.tensor([[5.0, 1.0]]))
    assert logits.argmax(1).item() == 1  # projected onto 'bee': 'ant' cannot be predicted


def test_label_not_in_the_class_list(tmp_path):
    image_folder(tmp_path / "src", {"ant": 3, "bee": 3}, "train")
    image_folder(tmp_path / "src", {"ant": 1, "bee": 1, "zebra": 1}, "val")
    with pytest.raises(UserError, match=r"label 'zebra' of .* \(val\) is not in the class list"):
        build_store(str(tmp_path / "src"), str(tmp_path / "store"), TINY)


def test_class_missing_from_a_split(tmp_path):
    image_folder(tmp_path / "src", {"ant": 3, "bee": 3}, "train")
    image_folder(tmp_path / "src", {"ant": 1}, "test")
    with pytest.raises(UserError, match="class 'bee' has no images in split test"):
        build_store(str(tmp_path / "src"), str(tmp_path / "store"), TINY)


def test_split_whose_only_image_is_corrupt_is_empty(tmp_path):
    image_folder(tmp_path / "src", {"ant": 3, "bee": 3}, "train")
    image_folder(tmp_path / "src", {"ant": 1, "bee": 1}, "val")
    image_folder(tmp_path / "src", {"ant": 1, "bee": 1}, "test")
    corrupt(tmp_path / "src" / "shift" / "night" / "ant" / "x.jpg")
    with pytest.raises(UserError, match=r"split shift/night is empty: none of its 1 images could be used \(skipped 1"):
        build_store(str(tmp_path / "src"), str(tmp_path / "store"), TINY)


def test_cli_prints_the_data_section_and_refuses_to_overwrite(tmp_path, capsys):
    image_folder(tmp_path / "src", {"ant": 6, "bee": 6})
    args = ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "store"), "--size", "10", "--workers", "1"]
    assert build.main(args) == 0
    out = capsys.readouterr().out
    assert f"heldout: {tmp_path / 'store'}/heldout" in out
    assert len(open_shards(str(tmp_path / "store" / "train"))) == 1  # 128 MB shards: one for 6 tiny images
    assert pq.ParquetFile(str(tmp_path / "store" / "train" / "part-00000.parquet")).metadata.num_rows == 6
    assert build.main(args) == 2
    assert "already holds a store" in capsys.readouterr().err
