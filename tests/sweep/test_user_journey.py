"""Mistakes a new user made fine-tuning on their own images (a folder per class, built into a store):
each stops the command with one line saying what is wrong and how to fix it, exit code 2, and
creates nothing (no MLflow database, no storage folder, no log file)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from soup import greedy
from soup.inputs.manifest import FINISHED, Ingredient, write_manifest
from sweep import run
from sweep.driver import run_sweep
from tests.conftest import tiny_sweep_tree
from tests.sweep.test_user_errors import one_line_error, write_config
from tests.trainers.images import image_folder
from trainers.config import DataConfig
from trainers.data import build
from trainers.data.build import BuildOptions, build_store
from trainers.data.store import check_dataset
from trainers.errors import UserError


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store built from an ImageFolder tree, as README's "Bring your images" says."""
    root = tmp_path_factory.mktemp("photos")
    image_folder(root / "src", {"cat": 6, "hot dog": 6})
    build_store(str(root / "src"), str(root / "store"), BuildOptions(size=12, carve=0.2))
    return root / "store"


def splits(store: Path) -> dict[str, str]:
    """The data section trainers.data.build printed (test again as the shift set tiny_sweep_tree wants)."""
    return {name: str(store / name) for name in ("train", "val", "heldout", "test")} | {"sketch": str(store / "test")}


def created(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


def test_a_data_path_that_is_the_store_itself_names_its_splits(capsys, store, tmp_path):
    config = write_config(tmp_path, tiny_sweep_tree({**splits(store), "train": str(store)}, tmp_path))
    err = one_line_error(capsys, run.main(["--config", config]))
    assert f"data: {store} is a whole store, not one split" in err  # it said "build a store" before
    assert f"train: {store}/train" in err and f"test: {store}/test" in err
    assert created(tmp_path, set()) == {"sweep.yaml"}


@pytest.mark.parametrize("storage", ["a-file", "a-file/sub"])
def test_a_storage_path_that_is_a_file_stops_before_anything_is_created(capsys, store, tmp_path, storage):
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's notes")
    config = write_config(tmp_path, tiny_sweep_tree(splits(store), tmp_path, storage_path=str(tmp_path / storage)))
    err = one_line_error(capsys, run.main(["--config", config]))
    assert f"storage_path {tmp_path / storage}: {blocker} is a file; set storage_path to a new folder" in err
    # before: Ray and MLflow started first, leaving mlflow.db and a console log here
    assert created(tmp_path, set()) == {"sweep.yaml", "a-file"}
    assert blocker.read_text() == "the user's notes"


@pytest.mark.parametrize("command", [["soup.greedy", "--experiment", "journey-pets"], ["--resume", "journey-pets"]])
def test_reading_a_sweep_from_a_sqlite_file_that_is_not_there_creates_none(capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo" / "mlflow.db"
    main = greedy.main if command[0] == "soup.greedy" else run.main
    err = one_line_error(capsys, main([*command[command[0] == "soup.greedy":], "--tracking-uri", f"sqlite:///{missing}"]))
    assert f"there is no database at {missing}; pass the --tracking-uri the sweep printed" in err
    assert not (tmp_path / "typo").exists()  # MLflow made the folder and an empty database there before


def test_a_mistake_in_a_set_override_is_blamed_on_set_not_on_the_file(capsys, store, tmp_path):
    tree = tiny_sweep_tree(splits(store), tmp_path)
    config = write_config(tmp_path, tree)
    err = one_line_error(capsys, run.main(["--config", config, "--set", "optim.lrr=1e-5"]))
    assert err.startswith("error: --set optim.lrr: unknown key")  # it said "<config>: optim.lrr", not in the file
    tree["optim"]["epoch"] = 1
    config = write_config(tmp_path, tree)
    err = one_line_error(capsys, run.main(["--config", config, "--set", "optim.lr=abc"]))
    assert err.startswith(f"error: {config}: optim.epoch: unknown key") and "; --set optim.lr: Input should be" in err


def test_the_printed_data_section_works_from_another_directory(capsys, tmp_path, monkeypatch):
    for split in ("train", "shift/night #2"):  # a shift set whose name YAML would read as a comment
        image_folder(tmp_path / "src" / split, {"cat": 6, "hot dog": 6})
    monkeypatch.chdir(tmp_path)
    assert build.main(["--src", "src", "--out", "my store: v1", "--size", "10", "--workers", "1"]) == 0
    printed = capsys.readouterr().out.split("data section for your sweep config:\n")[1]
    data = yaml.safe_load(printed)["data"]  # it printed `train: my store: v1/train`, not YAML, and relative
    assert data["shift"] == {"night #2": f"{tmp_path}/my store: v1/shift/night #2"}
    monkeypatch.chdir(tmp_path / "src")  # the sweep runs from elsewhere
    assert check_dataset(DataConfig.model_validate(data)) == ["cat", "hot dog"]


@pytest.mark.parametrize("storage", ["storage", None])  # None: the default, soupsweep-results in the working directory
def test_a_sweep_name_already_in_the_storage_folder_is_refused(capsys, store, tmp_path, monkeypatch, storage):
    """The user deleted mlflow.db to start afresh, or gave another tracking URI, and kept storage_path."""
    monkeypatch.chdir(tmp_path)
    tree = tiny_sweep_tree(splits(store), tmp_path)
    if storage is None:
        del tree["storage_path"]  # a relative default: Tune's can_restore raised ArrowInvalid on it
    storage = storage or "soupsweep-results"
    manifest = tmp_path / storage / "tiny-sweep-soupsweep" / "ingredients.parquet"
    manifest.parent.mkdir(parents=True)
    write_manifest(str(manifest), [Ingredient("t0", FINISHED)])
    before = manifest.read_bytes()
    err = one_line_error(capsys, run.main(["--config", write_config(tmp_path, tree)]))
    assert f"storage_path {tmp_path / storage} already holds a sweep named 'tiny-sweep'" in err
    assert "--resume tiny-sweep" in err
    assert manifest.read_bytes() == before and created(tmp_path, set()) == {"sweep.yaml", storage}


@pytest.mark.slow
def test_a_finished_sweep_is_not_overwritten_by_one_recorded_elsewhere(finished_sweep, tmp_path):
    """Its Tune folder is found (before: the new sweep overwrote its base and manifest, mixed its trials)."""
    cfg, outcome = finished_sweep
    storage = Path(cfg.storage_path)
    before = {p: p.stat().st_mtime_ns for p in storage.rglob("*") if p.is_file()}
    again = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'new.db'}"})})
    with pytest.raises(UserError, match=f"storage_path {storage} already holds a sweep named '{outcome.experiment}'"):
        run_sweep(again)
    assert {p: p.stat().st_mtime_ns for p in storage.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "new.db").exists()


@pytest.mark.slow
def test_the_sweep_summary_says_where_the_exported_model_is(finished_sweep, capsys):
    _, outcome = finished_sweep
    options = outcome.soup_options.model_copy(update={"export_open_clip": "exported", "register_method": "uniform"})
    run.print_summary(dataclasses.replace(outcome, soup_options=options))
    out = capsys.readouterr().out
    assert f"the uniform soup as an open_clip model: {Path('exported').resolve()}" in out
