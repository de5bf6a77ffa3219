"""clusters/scale.py asks the autoscaler for what a profile's trials ask Ray Train for.
(Its requests against a live cluster: tests/clusters/test_two_nodes.py.)"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trainers.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", ROOT / "clusters" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_bundle_per_worker_of_every_trial(scale):
    assert scale.trial_bundles(scale.profile_resources("aws-8gpu"), trials=2) == [{"CPU": 20.0, "GPU": 1.0}] * 16
    assert scale.trial_bundles(scale.profile_resources("k8s"), trials=3) == [{"CPU": 6.0, "GPU": 1.0}] * 3
    assert scale.trial_bundles(scale.profile_resources("local"), trials=1) == [{"CPU": 0.25}] * 2  # no GPU key


def test_needs_no_bucket_variable_and_rejects_unknown_profiles(scale, monkeypatch):
    monkeypatch.delenv("SOUPSWEEP_STORAGE", raising=False)
    assert scale.profile_resources("gcp-8gpu").cpus_per_worker == 24
    with pytest.raises(UserError, match="valid names"):
        scale.profile_resources("gcp")
    assert scale.main([]) == 2  # neither --cluster nor --release
