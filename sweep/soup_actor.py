"""The anytime soup in a running sweep: a Ray actor holding soup.methods.anytime.AnytimeSoup, offered each
trial's final checkpoint by the trial itself, and a Tune stopper that ends the sweep when the soup
stops improving.

The trial function offers its checkpoint and reports the outcome as its last Tune result, so the
search algorithm can learn from the soup gain (search.objective: soup_gain), the stopper and the
MLflow callback see it, and offers reach the actor one at a time, in the order trials finish.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import ray
from ray import tune

from soup.methods.anytime import AnytimeSoup
from soup.inputs.base import base_from_checkpoint
from trainers import metrics as M
from trainers.device import resolve_device

log = logging.getLogger(__name__)
OFFERED = "soup/offered"  # 1 in a trial's soup result (its last), 0 when it had nothing to offer
REPORT_KEYS = {"accepted": "soup/accepted", "soup_heldout": "soup/heldout", "soup_size": "soup/size",
               "order": "soup/order", "improved": "soup/improved", "ingredient_heldout": "soup/ingredient_heldout",
               "best_single_heldout": "soup/best_single_heldout"}
# The soup's state right after the offer, as strings (Tune results hold numbers or strings): with the
# numbers above, all that the sweep run shows, so the MLflow callback never asks the actor.
MEMBERS = "soup/members"  # the soup's trial ids, comma-joined
BEST_SINGLE = "soup/best_single"  # the trial with the best held-out accuracy so far


def actor_name(experiment: str) -> str:
    return f"soupsweep-anytime-{experiment}"


@ray.remote(num_cpus=0)
class AnytimeSoupActor:
    """One per sweep, named after the experiment, alive as long as the sweep driver."""

    def __init__(self, base_uri: str, tie_rule: str, tolerance: float):
        self.workdir = Path(tempfile.mkdtemp(prefix="soupsweep-anytime-"))
        base = base_from_checkpoint(base_uri, self.workdir)
        device = resolve_device("auto")
        self.soup = AnytimeSoup(base, device, tie_rule, tolerance, self.workdir)

    def offer(self, trial_id: str, checkpoint: str) -> dict:
        """The offer's outcome and the soup's state right after it (members, best single trial)."""
        outcome = self.soup.offer(trial_id, checkpoint).as_dict()
        summary = self.soup.summary()
        return {**outcome, **{key: summary[key] for key in ("members", "best_single", "best_single_heldout")}}

    def summary(self) -> dict:
        return self.soup.summary()


def start_anytime_actor(experiment: str, base_uri: str, tie_rule: str, tolerance: float, gpus: float):
    """The sweep's anytime soup actor (its handle keeps it alive: hold it until the soup stage)."""
    return AnytimeSoupActor.options(name=actor_name(experiment), num_gpus=gpus).remote(
        base_uri, tie_rule, tolerance)


def offer_to_soup(experiment: str, trial_id: str, checkpoint: str | None, complete: bool) -> dict[str, float | str]:
    """Called by a trial after training: offer a complete run's final checkpoint to the anytime soup;
    returns the values of the trial's soup result."""
    if not (checkpoint and complete):
        return {OFFERED: 0.0, M.SOUP_GAIN: 0.0}
    offer = ray.get(ray.get_actor(actor_name(experiment)).offer.remote(trial_id, checkpoint))
    values: dict[str, float | str] = {OFFERED: 1.0, M.SOUP_GAIN: float(offer["gain"])}
    values.update({key: float(offer[field]) for field, key in REPORT_KEYS.items()})
    values.update({MEMBERS: ",".join(offer["members"]), BEST_SINGLE: offer["best_single"]})
    return values


class SoupPlateau(tune.Stopper):
    """Ends the sweep once `patience` offered trials in a row did not raise the soup's held-out accuracy."""

    def __init__(self, patience: int):
        self.patience, self.without_improvement = patience, 0
        self.seen: set[str] = set()  # Tune passes a finished trial's last result twice (once with done)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get(OFFERED) and trial_id not in self.seen:
            self.seen.add(trial_id)
            self.without_improvement = 0 if result.get(REPORT_KEYS["improved"]) else self.without_improvement + 1
        return False

    def stop_all(self) -> bool:
        return self.without_improvement >= self.patience


def stop_reason(summary: dict, patience: int | None) -> str:
    """Why the search ended, as the sweep run records it, when the anytime stopping rule ended it."""
    if patience and summary["trials_without_improvement"] >= patience:
        return (f"anytime.stop_after: the soup's held-out accuracy ({summary['soup_heldout']:.4f}) did not "
                f"improve for {summary['trials_without_improvement']} finished trials")
    return ""

