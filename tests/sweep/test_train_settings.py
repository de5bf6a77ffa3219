"""The Ray Train settings a sweep's trials run with (sweep.trial.train_env), and when."""
from __future__ import annotations

import pytest

from sweep.trial import LOCAL_CLUSTER_ENV, TRAIN_ENV, train_env


def test_a_local_cluster_also_turns_the_preemption_watcher_off(monkeypatch):
    for key in {**TRAIN_ENV, **LOCAL_CLUSTER_ENV}:
        monkeypatch.delenv(key, raising=False)
    assert train_env(local_cluster=True) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                                             "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    assert train_env(local_cluster=False) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


@pytest.mark.parametrize("key", [*TRAIN_ENV, *LOCAL_CLUSTER_ENV])
def test_what_the_environment_sets_wins(monkeypatch, key):
    monkeypatch.setenv(key, "7")
    assert key not in train_env(local_cluster=True)


def test_started_here_tells_a_cluster_this_process_started(ray_cluster):
    from sweep.cluster import connect_ray, started_here

    assert started_here()  # conftest's ray.init(address="local") started it
    with connect_ray() as local:  # attached to it: still this machine's cluster
        assert local


def test_trial_processes_are_reused_unless_asha_stops_trials_early():
    from sweep.config import SweepConfig
    from trainers.config import validate
    from trainers.errors import UserError

    def search(**section) -> "SweepConfig":
        return validate(SweepConfig, {"search": section}).search

    asha = {"grace_period": 1, "reduction_factor": 2}
    assert search().reuses_actors() and not search(asha=asha).reuses_actors()
    assert not search(reuse_actors=False).reuses_actors()
    with pytest.raises(UserError, match="search.reuse_actors: true does not work with search.asha"):
        search(reuse_actors=True, asha=asha)
