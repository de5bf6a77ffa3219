"""clusters/k8s: KubeRay v1 and Kubernetes structure, GPUs, profiles that fit, nothing exposed."""
from __future__ import annotations

import copy
import fnmatch
import re
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import ray
import yaml

from sweep.profiles import load_profile
from tests.clusters.k8s_schemas import BY_KIND, RAY_CLUSTER, RAY_JOB

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "clusters" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# which worker group each Kubernetes profile's trials are sized for
PROFILE_GROUPS = {"k8s": "gpu-1x", "k8s-8gpu": "gpu-8x"}


def documents() -> list[tuple[str, dict]]:
    return [(f"{path.name}#{i}", doc) for path in MANIFESTS
            for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


def errors(schema: dict, document: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(document)]


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def quantity(value) -> float:
    """A Kubernetes quantity as a number (the suffixes these manifests use)."""
    number, suffix = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * {"": 1, "m": 1e-3, "Gi": 2**30, "Mi": 2**20}[suffix]


def test_every_manifest_matches_its_structure():
    docs = documents()
    assert {doc["kind"] for _, doc in docs} >= {"RayCluster", "RayJob", "Deployment", "Service"}
    problems = {name: errors(BY_KIND[doc["kind"]], doc) for name, doc in docs}
    assert {name: p for name, p in problems.items() if p} == {}


@pytest.mark.parametrize("mutate, schema, expected", [
    (lambda d: d["spec"].update(workerGroupSpec=d["spec"].pop("workerGroupSpecs")), RAY_CLUSTER, "workerGroupSpec"),
    (lambda d: d["spec"]["workerGroupSpecs"][0].pop("minReplicas"), RAY_CLUSTER, "minReplicas"),
    (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
     .update(cpu="8 cores"), RAY_CLUSTER, "8 cores"),
    (lambda d: d.update(apiVersion="ray.io/v1alpha1"), RAY_CLUSTER, "ray.io/v1"),
    (lambda d: d["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0].update(resource={}),
     RAY_CLUSTER, "resource"),
])
def test_the_structure_check_rejects_broken_manifests(mutate, schema, expected):
    broken = copy.deepcopy(by_kind("RayCluster")[0])
    mutate(broken)
    found = errors(schema, broken)
    assert found and any(expected in problem for problem in found), found


def test_rayjob_runs_a_sweep_on_the_same_cluster_spec():
    cluster, job = by_kind("RayCluster")[0], by_kind("RayJob")[0]
    assert errors(RAY_JOB, job) == []
    assert job["spec"]["rayClusterSpec"] == cluster["spec"], "keep rayjob.yaml's cluster equal to raycluster.yaml"
    entrypoint = job["spec"]["entrypoint"]
    assert "python -m sweep.run --cluster k8s --config /etc/soupsweep/sweep.yaml" in entrypoint
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    config_volume = next(v for v in head["volumes"] if "configMap" in v)
    assert mounts[config_volume["name"]] == "/etc/soupsweep"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_gpu_worker_groups_autoscale_and_request_gpus():
    spec = by_kind("RayCluster")[0]["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"] == ray.__version__
    gpus = {}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 < group["maxReplicas"], group["groupName"]
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
        gpus[group["groupName"]] = resources["limits"]["nvidia.com/gpu"]
    assert gpus == {"gpu-1x": 1, "gpu-8x": 8}
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head["limits"]


@pytest.mark.parametrize("profile, group", sorted(PROFILE_GROUPS.items()))
def test_profiles_fit_their_worker_group(profile, group):
    res = load_profile(profile, skip=["storage_path"])
    groups = {g["groupName"]: g["template"]["spec"]["containers"][0]["resources"]["limits"]
              for g in by_kind("RayCluster")[0]["spec"]["workerGroupSpecs"]}
    cpus, gpus = quantity(groups[group]["cpu"]), groups[group]["nvidia.com/gpu"]
    workers, per_cpu, per_gpu = (res["resources.workers"], res["resources.cpus_per_worker"],
                                 res["resources.gpus_per_worker"])
    assert workers * per_cpu <= cpus and workers * per_gpu <= gpus, "a trial must fit one pod"
    smaller = [g for g, limits in groups.items() if limits["nvidia.com/gpu"] < gpus]
    for name in smaller:  # so the trial's workers can only land on this group's pods
        assert per_cpu > quantity(groups[name]["cpu"]), f"{profile} workers also fit {name}"


def test_nothing_is_exposed_outside_the_cluster():
    for service in by_kind("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    for cluster in by_kind("RayCluster") + [j["spec"]["rayClusterSpec"] for j in by_kind("RayJob")]:
        spec = cluster.get("spec", cluster)
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
        assert not spec["headGroupSpec"].get("enableIngress", False)
    exposing = {"hostNetwork", "hostPort", "nodePort", "LoadBalancer", "NodePort", "Ingress"}
    assert [(name, hit) for name, doc in documents() for hit in _walk(doc) if hit in exposing] == []


def _walk(node) -> list:
    """Every key and scalar value in a parsed manifest."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in [key, *_walk(value)]]
    if isinstance(node, list):
        return [item for value in node for item in _walk(value)]
    return [node]


def test_mlflow_service_reaches_the_deployment_under_the_profiles_name():
    deployment, service = by_kind("Deployment")[0], by_kind("Service")[0]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {c["metadata"]["name"] for c in by_kind("PersistentVolumeClaim")}
    # the sweep driver calls http://mlflow:5000 (profile k8s); MLflow 3 answers only allowed Host headers
    uri = urlparse(load_profile("k8s", skip=["storage_path"])["mlflow.tracking_uri"])
    assert uri.hostname == service["metadata"]["name"]
    assert uri.port in {p["port"] for p in service["spec"]["ports"]}
    allowed = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--allowed-hosts=")).split(",")
    for host in (uri.netloc, "localhost:5000"):  # the driver, and a kubectl port-forward
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), host
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_the_image_carries_the_clusters_ray_version_and_the_project():
    dockerfile = (ROOT / "clusters" / "image" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+?)-", dockerfile, re.M)
    assert base and base.group(1) == ray.__version__
    assert re.search(r"pip install .*-e /home/ray/soupsweep", dockerfile)
    images = {c["image"] for _, doc in documents() if doc["kind"] in ("RayCluster", "Deployment")
              for c in _containers(doc)}
    assert len(images) == 1, images  # one image for the head, the workers and MLflow


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"]
    spec = doc["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]
