"""clusters/aws and clusters/gcp: Ray's own cluster schema, GPU node types, profiles that fit, no open ports."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from sweep.profiles import load_profile

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_CONFIGS = sorted(p for cloud in ("aws", "gcp") for p in (ROOT / "clusters" / cloud).glob("*.yaml"))
RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
# which launcher node type each cloud profile's trials are sized for
PROFILE_NODES = {"aws-1gpu": ("aws", "gpu_1x"), "aws-8gpu": ("aws", "gpu_8x"),
                 "gcp-1gpu": ("gcp", "gpu_1x"), "gcp-8gpu": ("gcp", "gpu_8x")}
STORAGE_SCHEME = {"aws": "s3://", "gcp": "gs://"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def cloud_config(cloud: str) -> dict:
    return load(ROOT / "clusters" / cloud / "soupsweep.yaml")


def schema_errors(config: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in jsonschema.Draft7Validator(RAY_SCHEMA).iter_errors(config)]


def commands(config: dict, *sections: str) -> str:
    return "\n".join(cmd for section in sections for cmd in config.get(section, []))


def test_there_is_a_launcher_config_per_cloud():
    assert [p.relative_to(ROOT).as_posix() for p in LAUNCHER_CONFIGS] == ["clusters/aws/soupsweep.yaml",
                                                                          "clusters/gcp/soupsweep.yaml"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_valid_against_the_schema_inside_ray(path):
    config = load(path)
    assert schema_errors(config) == []
    # what `ray up` does before it touches the cloud: merge the provider's defaults, then validate
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(setup_comands=c.pop("setup_commands")), "setup_comands"),
    (lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5), "0.5"),
    (lambda c: c["available_node_types"]["gpu_8x"].pop("node_config"), "node_config"),
    (lambda c: c["auth"].update(ssh_password="x"), "ssh_password"),
])
def test_the_schema_check_rejects_broken_configs(mutate, expected):
    broken = cloud_config("aws")
    mutate(broken)
    found = schema_errors(broken)
    assert found and any(expected in problem for problem in found), found


def test_rays_own_checks_reject_what_the_schema_lets_through():
    broken = cloud_config("aws")
    broken["head_node_type"] = "headnode"  # not a node type: the schema cannot tell
    assert schema_errors(broken) == []
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_cpu_head_and_autoscaling_gpu_node_types(cloud):
    config = cloud_config(cloud)
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    assert sorted(t["resources"]["GPU"] for t in types.values()) == [1, 8]
    for name, node_type in types.items():
        assert node_type["min_workers"] == 0 < node_type["max_workers"], name
    assert config["max_workers"] == sum(t["max_workers"] for t in types.values())


@pytest.mark.parametrize("profile, target", sorted(PROFILE_NODES.items()))
def test_profiles_fit_their_node_type(profile, target):
    cloud, node_type = target
    types = cloud_config(cloud)["available_node_types"]
    res = load_profile(profile, skip=["storage_path"])
    workers, cpus, gpus = res["resources.workers"], res["resources.cpus_per_worker"], res["resources.gpus_per_worker"]
    node = types[node_type]["resources"]
    assert workers * cpus <= node["CPU"] and workers * gpus <= node["GPU"], "a trial must fit one node"
    assert res["resources.driver_cpus"] <= types["head"]["resources"]["CPU"]
    smaller = [n for n, t in types.items() if 0 < t["resources"].get("GPU", 0) < node["GPU"]]
    for name in smaller:  # so the trial's workers can only land on this node type
        assert cpus > types[name]["resources"]["CPU"], f"{profile} workers also fit {name}"


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_nothing_listens_on_the_internet(cloud):
    config = cloud_config(cloud)
    head_start = commands(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start
    assert re.search(r"mlflow server --host 127\.0\.0\.1 ", head_start)
    every_command = commands(config, "initialization_commands", "setup_commands", "head_setup_commands",
                             "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    assert "0.0.0.0" not in every_command
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        if cloud == "aws":
            # Without SecurityGroupIds, Ray creates a group that admits SSH from 0.0.0.0/0.
            assert node_config["SecurityGroupIds"], name
            assert node_config["MetadataOptions"]["HttpTokens"] == "required", name
        else:
            # Without networkInterfaces, Ray uses the project's first subnet (usually `default`).
            subnets = [i["subnetwork"] for i in node_config["networkInterfaces"]]
            assert subnets and all(s.endswith("/subnetworks/soupsweep") for s in subnets), name
    assert "security_group" not in config["provider"]  # no extra inbound rules


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_nodes_install_the_project_and_export_the_storage(cloud):
    config = cloud_config(cloud)
    assert config["file_mounts"] == {"/home/ubuntu/soupsweep": ".", "/home/ubuntu/.ray/auth_token": "~/.ray/auth_token"}
    setup = commands(config, "setup_commands")
    assert re.search(r"pip install .*torch==\S+", setup) and re.search(r"pip install .*-e ~/soupsweep", setup)
    exported = re.search(r"export SOUPSWEEP_STORAGE=(\S+) RAY_AUTH_MODE=token' > ~/soupsweep.env", setup)
    assert exported and exported.group(1).startswith(STORAGE_SCHEME[cloud])
    assert f"--artifacts-destination $SOUPSWEEP_STORAGE/" in commands(config, "head_start_ray_commands")
    assert "mlflow_db.py restore" in commands(config, "head_setup_commands")
    assert (ROOT / "clusters" / "mlflow_db.py").is_file()
