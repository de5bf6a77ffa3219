"""--config and --set are read the same way by python -m trainers.run and python -m sweep.run: YAML
syntax errors are one line naming the file (or the --set) and the place, exit 2, nothing created."""
from __future__ import annotations

import pytest

from sweep import run as sweep_run
from tests.sweep.test_user_errors import one_line_error
from trainers import run as trainers_run

BAD_YAML = "optim:\n  lr: [1e-5\n  epochs: 2\n"  # an unclosed list


@pytest.mark.parametrize("main", [sweep_run.main, trainers_run.main], ids=["sweep.run", "trainers.run"])
def test_a_config_file_with_bad_yaml(main, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    err = one_line_error(capsys, main(["--config", "bad.yaml"]))
    assert "--config: bad.yaml is not valid YAML" in err and "at line 3, column 9" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing created


@pytest.mark.parametrize("main", [sweep_run.main, trainers_run.main], ids=["sweep.run", "trainers.run"])
@pytest.mark.parametrize("item, expected", [
    ("optim.lr=[1e-5", "--set 'optim.lr=[1e-5': the value is not valid YAML"),
    ("optim.lr=a: b: c", "--set 'optim.lr=a: b: c': the value is not valid YAML (mapping values"),
    ("=3", "--set '=3': use KEY=VALUE"),
])
def test_a_set_with_bad_yaml(main, item, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text("optim: {epochs: 2}\n")
    assert expected in one_line_error(capsys, main(["--config", "good.yaml", "--set", item]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.yaml"]


def test_a_config_file_that_is_not_a_mapping(capsys, tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    err = one_line_error(capsys, trainers_run.main(["--config", str(tmp_path / "list.yaml")]))
    assert "must hold a YAML mapping" in err


def test_a_set_names_a_search_space_key_with_its_dots(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("search:\n  space:\n    optim.lr: {loguniform: [1.0e-5, 1.0e-3]}\n")
    cfg = sweep_run.load_config(str(config), ["search.space.optim.epochs={randint: [2, 3]}",
                                              "search.space.optim.lr={uniform: [1.0e-4, 2.0e-4]}"])
    space = cfg.search.space
    assert set(space) == {"optim.lr", "optim.epochs"}  # the key added, the other replaced, none lost
    assert tuple(space["optim.epochs"].randint) == (2, 3) and tuple(space["optim.lr"].uniform) == (1e-4, 2e-4)
