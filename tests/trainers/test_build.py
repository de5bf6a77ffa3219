"""`python -m trainers.data.build` on generated image files: folders, manifests, carve-outs, shards and the
card, and the problems a user can meet (a corrupt file, a label not in the class list, a class missing from a
split, an empty split)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# --- the command never deletes or overwrites what it did not write (real command, real files) ---

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers.data.build", "--workers", "1", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def files(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(done: subprocess.CompletedProcess, start: str) -> str:
    """The one line of a refused command (exit code 2); `start` is how it begins."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {start}"), done.stderr[-2000:]
    return lines[0]


@pytest.fixture
def images(tmp_path) -> Path:
    image_folder(tmp_path / "imgs", {"ant": 6, "bee": 6}, "train")  # split folders: a shift set can be added
    return tmp_path / "imgs"


@pytest.mark.parametrize("out, says", [(".", "is the source"), ("store", "is inside the source"),
                                       ("..", "contains the source")])
def test_out_overlapping_the_source_is_refused_and_every_source_file_stays(images, out, says):
    before = files(images.parent)
    refused(cli("--src", images, "--out", images / out, cwd=images.parent), f"--out {images / out} {says}")
    assert files(images.parent) == before


def test_a_non_empty_directory_of_the_user_is_refused_and_untouched(images, tmp_path):
    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "labels.txt").write_text("ant\nbee\n")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces only a store
        line = refused(cli("--src", images, "--out", "mine", *extra, cwd=tmp_path), "--out mine is a non-empty")
        assert "not a store" in line
        assert files(tmp_path / "mine") == {"train/labels.txt": b"ant\nbee\n"}


def test_overwrite_replaces_the_previous_store_and_nothing_else_in_it(images, tmp_path):
    image_folder(images, {"bee": 1}, "shift/night")  # the first build has a shift set...
    assert cli("--src", images, "--out", "store", "--size", "10", cwd=tmp_path).returncode == 0
    (tmp_path / "store" / "notes.txt").write_text("mine")
    (tmp_path / "store" / "train" / "labels.txt").write_text("mine too")
    refused(cli("--src", images, "--out", "store", cwd=tmp_path), "--out store already holds a store")
    shutil.rmtree(images / "shift")  # ...the new build has no shift set: its old shards go
    done = cli("--src", images, "--out", "store", "--size", "8", "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "store" / "card.json").read_text())
    assert card["size"] == 8 and "shift/night" not in card["splits"]
    shards = {f"{entry['path']}/{s['file']}" for entry in card["splits"].values() for s in entry["shards"]}
    assert set(files(tmp_path / "store")) == {"card.json", "notes.txt", "train/labels.txt", *shards}
    assert (tmp_path / "store" / "train" / "labels.txt").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "store"]  # no staging folder left


def test_a_build_that_fails_midway_leaves_nothing(images, tmp_path):
    corrupt(images / "shift" / "night" / "ant" / "x.jpg")  # the last split written: train and val came first
    before = files(tmp_path)
    refused(cli("--src", images, "--out", "new/store", cwd=tmp_path), "split shift/night is empty")
    assert files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_an_overwrite_that_fails_leaves_the_previous_store_intact(images, tmp_path):
    assert cli("--src", images, "--out", "store", "--size", "10", cwd=tmp_path).returncode == 0
    before = files(tmp_path / "store")
    corrupt(images / "shift" / "night" / "ant" / "x.jpg")
    refused(cli("--src", images, "--out", "store", "--overwrite", cwd=tmp_path), "split shift/night is empty")
    assert files(tmp_path / "store") == before and sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "store"]



def test_a_build_killed_midway_leaves_a_staging_folder_that_the_next_build_removes(tmp_path, capsys, monkeypatch):
    image_folder(tmp_path / "imgs", {name: 150 for name in ("ant", "bee", "cat", "dog")})
    with (tmp_path / "build.log").open("w") as log:
        builder = subprocess.Popen([sys.executable, "-m", "trainers.data.build", "--workers", "1", "--src", "imgs",
                                    "--out", "store", "--shard-mb", "0.01"], cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    while builder.poll() is None and not list(tmp_path.glob(".store.*/**/*.parquet")):
        time.sleep(0.02)  # until a shard is half-way into the staging folder
    os.kill(builder.pid, signal.SIGKILL)  # no handler runs: the staging folder stays
    assert builder.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "build.log").read_text()[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".store.")]
    done = in_process("--src", "imgs", "--out", "store", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log", "imgs", "store"]  # the killed one's is gone
    check_dataset(DataConfig(train=str(tmp_path / "store" / "train"), val=str(tmp_path / "store" / "val"),
                             heldout=str(tmp_path / "store" / "heldout"), test=str(tmp_path / "store" / "test")))


def in_process(*args: str | Path, cwd: Path, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """The command's main() in this process (seconds faster than a subprocess), as a CompletedProcess."""
    monkeypatch.chdir(cwd)
    code = build.main(["--workers", "1", *map(str, args)])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_overwrite_never_writes_over_a_user_file_where_a_new_shard_goes(images, tmp_path, capsys, monkeypatch):
    def build_(*extra):
        return in_process("--src", images, "--out", "store", "--size", "8", *extra, cwd=tmp_path, capsys=capsys,
                          monkeypatch=monkeypatch)

    assert build_().returncode == 0
    (tmp_path / "store" / "shift" / "night").mkdir(parents=True)
    (tmp_path / "store" / "shift" / "night" / "part-00000.parquet").write_bytes(b"mine")
    before = files(tmp_path / "store")
    image_folder(images, {"bee": 1}, "shift/night")
    refused(build_("--overwrite"), f"--out {tmp_path / 'store'}/shift/night/part-00000.parquet is not part of")
    assert files(tmp_path / "store") == before and sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "store"]


def test_a_bad_flag_exits_2_with_one_line_before_creating_anything(images, tmp_path):
    refused(cli("--src", images, "--out", "store", "--size", "0", cwd=tmp_path), "--size 0: give a short side")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


@pytest.mark.parametrize("flag, value", [("--classes", "/missing/classes.txt"), ("--workers", "0"), ("--size", "-3"),
                                         ("--carve", "-0.5"), ("--carve", "1"), ("--quality", "101"),
                                         ("--shard-mb", "0"), ("--shard-mb", "nan")])
def test_every_bad_flag_is_one_line_and_creates_nothing(images, tmp_path, flag, value, capsys, monkeypatch):
    refused(in_process("--src", images, "--out", "store", flag, value, cwd=tmp_path, capsys=capsys,
                       monkeypatch=monkeypatch), f"{flag} {value}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_a_class_file_without_names_or_with_a_name_twice(images, tmp_path, capsys, monkeypatch):
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "twice.txt").write_text("ant\nbee\nant\n")
    for file, says in (("blank.txt", "lists no class names"), ("twice.txt", "'ant' more than once")):
        done = in_process("--src", images, "--out", "s", "--classes", file, cwd=tmp_path, capsys=capsys,
                          monkeypatch=monkeypatch)
        assert says in refused(done, f"--classes {file}")


def test_a_carve_that_leaves_no_training_images(images, tmp_path, capsys, monkeypatch):
    done = in_process("--src", images, "--out", "store", "--carve", "0.4", cwd=tmp_path, capsys=capsys,
                      monkeypatch=monkeypatch)
    assert "below 0.333" in refused(done, "--carve 0.4") and not (tmp_path / "store").exists()
