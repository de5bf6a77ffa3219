"""The anytime soup in a sweep on the local Ray cluster: it grows as trials finish, its final soup
equals the offline walk, the soup-gain objective reaches Optuna, and the plateau rule stops the sweep."""
from __future__ import annotations

import glob
import pickle

import pytest
import torch
from mlflow.tracking import MlflowClient

from soup.pipeline import soup_experiment
from sweep.config import SweepConfig
from sweep.driver import TAG_STOP_REASON, run_sweep
from soup.inputs.manifest import FINISHED
from sweep.tracking import TAG_ANYTIME_BEST_SINGLE, TAG_ANYTIME_MEMBERS, TAG_OFFER_ORDER, TAG_STATUS
from tests.conftest import tiny_sweep_tree
from tests.sweep.sweeps import trial_runs
from trainers.config import validate

pytestmark = pytest.mark.slow


def sweep_config(demo_data, tmp_path, **search) -> SweepConfig:
    tree = tiny_sweep_tree(demo_data, tmp_path)
    tree["search"] = {"num_samples": 1, "max_concurrent_trials": 1, **search}
    tree["resources"] = {"workers": 1, "cpus_per_worker": 0.5, "driver_cpus": 0.5}
    tree["soup"] = {"methods": ["best", "greedy"]}
    return validate(SweepConfig, tree)


def test_anytime_soup_grows_as_trials_finish_and_stops_on_a_plateau(ray_cluster, demo_data, tmp_path):
    # One good learning rate, then trials that barely move from the random initialisation: averaging
    # them in cannot raise the soup's held-out accuracy, so the sweep stops after two of them.
    cfg = sweep_config(demo_data, tmp_path, algorithm="grid", space={"optim.lr": {"choice": [1e-3, 1e-9, 2e-9, 3e-9, 4e-9]}})
    cfg.anytime.stop_after = 2
    outcome = run_sweep(cfg)
    client, uri = MlflowClient(cfg.mlflow.tracking_uri), cfg.mlflow.tracking_uri
    runs = trial_runs(uri, outcome.experiment)
    assert 3 <= len(runs) < 5
    sweep_run = client.get_run(outcome.sweep_run_id)
    assert "did not improve for 2 finished trials" in sweep_run.data.tags[TAG_STOP_REASON]

    orders = sorted(int(r.data.tags[TAG_OFFER_ORDER]) for r in runs if TAG_OFFER_ORDER in r.data.tags)
    assert orders == list(range(len(orders))) and len(orders) >= 3
    # an offered trial ran all its epochs: finished, even when the stopping rule ended the search first
    assert {r.data.tags[TAG_STATUS] for r in runs if TAG_OFFER_ORDER in r.data.tags} == {FINISHED}
    history = client.get_metric_history(outcome.sweep_run_id, "anytime/soup_heldout")
    assert sorted(m.step for m in history) == [n + 1 for n in orders]  # the parent updated on every offer
    members = sweep_run.data.tags[TAG_ANYTIME_MEMBERS].split(",")
    (in_sweep,) = [r for r in outcome.soup.outcome.results if r.name == "greedy"]
    assert in_sweep.members == members  # the soup stage started from the anytime soup
    # The sweep run's last anytime values are the final soup's (carried by the trials' soup results).
    last = {name: max(client.get_metric_history(outcome.sweep_run_id, f"anytime/{name}"), key=lambda m: m.step)
            for name in ("soup_heldout", "best_single_heldout", "size")}
    assert {m.step for m in last.values()} == {orders[-1] + 1}
    assert last["size"].value == len(members)
    assert last["soup_heldout"].value == pytest.approx(in_sweep.trace[-1]["soup_heldout"])
    best = in_sweep.trace[0]  # the greedy order: best held-out first
    assert last["best_single_heldout"].value == pytest.approx(best["ingredient_heldout"])
    assert sweep_run.data.tags[TAG_ANYTIME_BEST_SINGLE] == best["trial_id"]

    offline = soup_experiment(uri, outcome.experiment, methods=["greedy"]).outcome
    (walked,) = offline.results
    assert walked.members == members
    assert [(r["trial_id"], r["accepted"]) for r in walked.trace] == [(r["trial_id"], r["accepted"]) for r in in_sweep.trace]
    assert [r["soup_heldout"] for r in walked.trace] == pytest.approx([r["soup_heldout"] for r in in_sweep.trace])
    for name, logits in walked.logits.items():
        assert torch.allclose(logits, in_sweep.logits[name], atol=1e-5)


def test_soup_gain_is_what_optuna_learns_from(ray_cluster, demo_data, tmp_path):
    cfg = sweep_config(demo_data, tmp_path, algorithm="optuna", seed=1, num_samples=3, objective="soup_gain",
                       space={"optim.lr": {"loguniform": [1e-4, 2e-3]}})
    outcome = run_sweep(cfg)
    gains = {}
    for run in trial_runs(cfg.mlflow.tracking_uri, outcome.experiment):
        (gain,) = MlflowClient(cfg.mlflow.tracking_uri).get_metric_history(run.info.run_id, "soup/gain")
        gains[round(float(run.data.params["optim.lr"]), 12)] = gain.value
    assert len(gains) == 3 and sum(g > 0 for g in gains.values()) >= 1

    (state_file,) = glob.glob(f"{cfg.storage_path}/{outcome.experiment}/searcher-state-*.pkl")
    with open(state_file, "rb") as f:
        study = find_study(pickle.load(f))
    told = {round(t.params["optim.lr"], 12): t.value for t in study.trials}
    assert told == pytest.approx(gains)  # Optuna was told each trial's soup gain, not its val/top1


def find_study(state):
    """The Optuna study inside Tune's saved searcher state (a ConcurrencyLimiter around OptunaSearch)."""
    import optuna

    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, optuna.Study):
            return item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    raise AssertionError("no Optuna study in the searcher state")
