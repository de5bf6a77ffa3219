"""Cluster profiles: `python -m sweep.run --cluster NAME` between the config file and --set."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.profiles import PROFILES_DIR, list_profiles, load_profile
from sweep.run import load_config, main
from trainers.errors import UserError

SHIPPED = {"local", "aws-1gpu", "aws-8gpu", "gcp-1gpu", "gcp-8gpu", "k8s", "k8s-8gpu"}


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": 0.002},
                                    "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
                                    "storage_path": str(tmp_path / "from-config")}))
    return str(path)


def test_the_shipped_profiles_are_found_in_the_repository():
    assert PROFILES_DIR == Path(__file__).resolve().parents[2] / "clusters" / "profiles"
    assert set(list_profiles()) == SHIPPED


def test_an_unknown_profile_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown cluster profile 'aws'; valid names: aws-1gpu, aws-8gpu, .*local"):
        load_profile("aws")


def test_a_missing_clusters_folder_says_where_profiles_come_from(tmp_path):
    with pytest.raises(UserError, match=r"no cluster profiles at .*pip install -e \."):
        load_profile("local", directory=tmp_path / "clusters" / "profiles")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_profile_gives_a_valid_sweep_config(name, config_file, monkeypatch):
    monkeypatch.setenv("SOUPSWEEP_STORAGE", "s3://my-bucket/soupsweep")
    cfg = load_config(config_file, [], name)
    profile = load_profile(name)
    assert cfg.resources.workers == profile["resources.workers"]
    assert cfg.resources.cpus_per_worker == profile["resources.cpus_per_worker"]
    assert cfg.mlflow.tracking_uri.startswith(("sqlite:///", "http://"))
    if name != "local":  # the cloud ones take their storage from the nodes' environment
        assert cfg.storage_path == "s3://my-bucket/soupsweep" and cfg.resources.gpus_per_worker == 1


def test_config_then_profile_then_set(config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config_file, ["resources.workers=3"], "local")
    assert cfg.resources.workers == 3  # --set wins over the profile
    assert cfg.resources.cpus_per_worker == 0.25  # the profile wins over the config file
    assert cfg.optim.lr == 0.002  # what the profile does not name stays
    assert cfg.storage_path == str(tmp_path / "soupsweep-results")  # made absolute, as in a config file


def test_an_unset_variable_names_the_key_unless_set_replaces_it(config_file, monkeypatch):
    monkeypatch.delenv("SOUPSWEEP_STORAGE", raising=False)
    with pytest.raises(UserError, match=r"aws-1gpu: storage_path uses \$\{SOUPSWEEP_STORAGE\}.*--set storage_path="):
        load_config(config_file, [], "aws-1gpu")
    cfg = load_config(config_file, ["storage_path=s3://other/place"], "aws-1gpu")
    assert cfg.storage_path == "s3://other/place" and cfg.resources.gpus_per_worker == 1


def test_a_profiles_own_mistake_names_the_profile(tmp_path):
    (tmp_path / "broken.yaml").write_text("resources: {gpus: 1}\n")
    (tmp_path / "list.yaml").write_text("- resources\n")
    with pytest.raises(UserError, match=r"cluster profile .*broken\.yaml: resources\.gpus: unknown key"):
        load_profile("broken", directory=tmp_path)
    with pytest.raises(UserError, match="must hold a YAML mapping"):
        load_profile("list", directory=tmp_path)
    (tmp_path / "syntax.yaml").write_text("resources: {workers: 2\n")
    with pytest.raises(UserError, match=r"--cluster syntax: .*syntax\.yaml is not valid YAML \(.* at line 2, column 1\); fix its syntax"):
        load_profile("syntax", directory=tmp_path)


def test_a_profile_may_set_search_space_dimensions_and_dotted_names(tmp_path):
    (tmp_path / "wide.yaml").write_text("search: {space: {optim.lr: {loguniform: [1.0e-6, 1.0e-4]}}}\n"
                                        "data: {shift: {imagenet-v2.1: /d/v2.parquet}}\n")
    overrides = load_profile("wide", directory=tmp_path)
    assert overrides == {"search.space.optim.lr": {"loguniform": [1.0e-6, 1.0e-4]},
                         "data.shift.imagenet-v2.1": "/d/v2.parquet"}


def test_the_command_line(config_file, capsys):
    assert main(["--config", config_file, "--cluster", "local", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["resources"]["cpus_per_worker"] == 0.25 and printed["optim"]["lr"] == 0.002
    assert main(["--config", config_file, "--cluster", "nope", "--print-config"]) == 2
    assert "valid names: aws-1gpu" in capsys.readouterr().err
