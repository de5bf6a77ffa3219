from __future__ import annotations

import hashlib
import json
import logging
import socket
import subprocess
import sys

import pyarrow.fs as pafs
import pytest
import torch

from trainers.checkpoint import (DIGESTS, META, TRAIN_STATE, WEIGHTS, ChangedCheckpoint, load_checkpoint,
                                 load_train_state, local_checkpoint, save_checkpoint)


def test_round_trip_and_atomic_replace(tmp_path):
    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7), "flag": torch.tensor([True, False])}
    target = save_checkpoint(tmp_path / "ckpt", state, {"epoch": 1})
    loaded = load_checkpoint(target)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
    assert loaded.meta["epoch"] == 1 and loaded.meta["schema_version"] == 2 and loaded.meta["code_version"]

    save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(2)}, {"epoch": 2})  # replaces the old one whole
    assert load_checkpoint(target).meta["epoch"] == 2
    assert set(load_checkpoint(target).state_dict) == {"w"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind
    assert {p.name for p in target.iterdir()} == {WEIGHTS, META}


def flip_bit(path, offset_from_end: int, bit: int) -> None:
    """Flip one bit of a file in place (counted from its end: the tensor data, not the header)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_meta_records_the_sha256_of_every_file_and_readers_refuse_changed_bytes(tmp_path):
    target = save_checkpoint(tmp_path / "ckpt", {"w": torch.full((64,), 0.045)}, {"epoch": 1},
                             train_state={"optimizer": {"step": torch.tensor(3)}})
    digests = json.loads((target / META).read_text())[DIGESTS]
    for name in (WEIGHTS, TRAIN_STATE):
        assert digests[name] == hashlib.sha256((target / name).read_bytes()).hexdigest()
    assert load_train_state(target)["optimizer"]["step"] == 3
    flip_bit(target / WEIGHTS, 3, 0)  # the lowest mantissa bit of a weight: a value barely changes
    with pytest.raises(ChangedCheckpoint, match=f"{WEIGHTS} changed after it was written"):
        load_checkpoint(target)  # what a resumed trial and every trial's base read
    flip_bit(target / TRAIN_STATE, 100, 0)
    with pytest.raises(ChangedCheckpoint, match=f"{TRAIN_STATE} changed after it was written"):
        load_train_state(target)


def test_checkpoints_written_before_digests_are_read_with_a_warning(tmp_path, caplog):
    target = save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(3)}, {"epoch": 1})
    meta = json.loads((target / META).read_text())
    del meta[DIGESTS]
    (target / META).write_text(json.dumps({**meta, "schema_version": 1, "code_version": "0.1.0"}))
    with caplog.at_level(logging.WARNING, logger="trainers.checkpoint"):
        assert torch.equal(load_checkpoint(target).state_dict["w"], torch.ones(3))
    assert "records no sha256" in caplog.text and "written by soupsweep 0.1.0" in caplog.text


def test_a_remote_checkpoint_read_for_its_weights_leaves_the_optimizer_state_where_it_is(s3_server, tmp_path,
                                                                                         monkeypatch):
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    local = save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(3)}, {"epoch": 1}, {"adam": torch.zeros(6)})
    fs, _ = pafs.FileSystem.from_uri("s3://soups/run/ckpt")
    pafs.copy_files(str(local), "soups/run/ckpt", destination_filesystem=fs)
    with local_checkpoint("s3://soups/run/ckpt", files=(META, WEIGHTS, "absent.json")) as copy:
        assert sorted(p.name for p in copy.iterdir()) == [META, WEIGHTS]
        assert torch.equal(load_checkpoint(copy).state_dict["w"], torch.ones(3))  # digests still verify
    with local_checkpoint("s3://soups/run/ckpt") as copy:
        assert sorted(p.name for p in copy.iterdir()) == [META, WEIGHTS, TRAIN_STATE]


def test_a_digest_removed_from_a_schema_2_meta_json_is_refused_not_read_unverified(tmp_path):
    target = save_checkpoint(tmp_path / "ckpt", {"w": torch.full((64,), 0.045)}, {"epoch": 1},
                             train_state={"optimizer": {"step": torch.tensor(3)}})
    flip_bit(target / WEIGHTS, 3, 0)  # changed bytes, whose digest someone then removed from meta.json
    meta = json.loads((target / META).read_text())
    del meta[DIGESTS][WEIGHTS]
    (target / META).write_text(json.dumps(meta))
    with pytest.raises(ChangedCheckpoint, match=f"{WEIGHTS}: its meta.json .schema 2.* records none"):
        load_checkpoint(target)
    del meta[DIGESTS]
    (target / META).write_text(json.dumps(meta))
    with pytest.raises(ChangedCheckpoint, match="meta.json was edited"):
        load_checkpoint(target)
    with pytest.raises(ChangedCheckpoint, match=f"{TRAIN_STATE}: its meta.json"):
        load_train_state(target)  # a trial never resumes from it either


def test_a_writer_killed_mid_checkpoint_leaves_nothing_the_next_save_keeps(tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    stale = tmp_path / f".ckpt.partial-{killed.pid}@{socket.gethostname()}"  # as it would have named it
    stale.mkdir()
    (stale / WEIGHTS).write_bytes(b"half")
    save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(3)}, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
