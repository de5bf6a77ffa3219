from __future__ import annotations

import torch

from trainers.checkpoint import META, WEIGHTS, load_checkpoint, save_checkpoint


def test_round_trip_and_atomic_replace(tmp_path):
    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7), "flag": torch.tensor([True, False])}
    target = save_checkpoint(tmp_path / "ckpt", state, {"epoch": 1})
    loaded = load_checkpoint(target)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
    assert loaded.meta["epoch"] == 1 and loaded.meta["schema_version"] == 1 and loaded.meta["code_version"]

    save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(2)}, {"epoch": 2})  # replaces the old one whole
    assert load_checkpoint(target).meta["epoch"] == 2
    assert set(load_checkpoint(target).state_dict) == {"w"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind
    assert {p.name for p in target.iterdir()} == {WEIGHTS, META}
