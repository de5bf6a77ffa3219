"""The anytime soup: at every moment the greedy soup over the trials offered so far."""
from __future__ import annotations

import math

import pytest
import torch

from soup.methods.anytime import AnytimeSoup
from soup.methods.options import SoupOptions
from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from tests.soup.conftest import run_stage


@pytest.fixture(scope="module")
def offered(soup_inputs, tmp_path_factory):
    """An anytime soup offered the three ingredients in the order 2, 3, 1, then an unreadable one;
    the members after each offer."""
    _, base_dir, ingredients = soup_inputs
    workdir = tmp_path_factory.mktemp("anytime")
    soup = AnytimeSoup(base_from_checkpoint(base_dir, workdir), torch.device("cpu"), ">=", 0.5, workdir)
    assert [s.name for s in soup.evaluator.sets] == ["heldout"]  # it selects; test and shifts stay unread
    order = [ingredients[1], ingredients[2], ingredients[0]]
    offers, members = [], []
    for ingredient in order:
        offers.append(soup.offer(ingredient.trial_id, ingredient.checkpoint))
        members.append(soup.members)
    offers.append(soup.offer("broken", str(workdir / "no-such-checkpoint")))
    return soup, order, offers, members


def test_after_every_offer_the_soup_is_the_offline_greedy_soup(offered, soup_inputs, tmp_path):
    soup, order, offers, members = offered
    _, base_dir, _ = soup_inputs
    for k in range(1, len(order) + 1):
        offline = run_stage(sorted(order[:k], key=lambda i: i.trial_id), base_dir, tmp_path / str(k),
                            methods=["greedy"])
        (greedy,) = offline.results
        assert members[k - 1] == greedy.members
        assert offers[k - 1].soup_heldout == pytest.approx(greedy.trace[-1]["soup_heldout"])
    assert [row["trial_id"] for row in soup.trace] == [row["trial_id"] for row in greedy.trace]
    assert [row["accepted"] for row in soup.trace] == [row["accepted"] for row in greedy.trace]


def test_offers_report_the_gain_and_why_a_trial_was_left_out(offered):
    soup, _, offers, members = offered
    first = offers[0]
    assert first.accepted and first.order == 0 and first.soup_size == 1
    assert first.gain == pytest.approx(first.ingredient_heldout - soup.zeroshot_heldout)
    for offer, previous in zip(offers[1:3], offers[:2]):
        change = offer.soup_heldout - previous.soup_heldout
        assert offer.gain == (pytest.approx(change) if offer.accepted else 0.0)
        assert offer.improved == (change > 0)
    broken = offers[3]
    assert not broken.accepted and broken.gain == 0.0 and "unreadable checkpoint" in broken.reason
    assert math.isnan(broken.ingredient_heldout) and broken.soup_heldout == offers[2].soup_heldout
    summary = soup.summary()
    assert summary["members"] == members[-1] and summary["offers"] == 4
    best = max(offers[:3], key=lambda o: o.ingredient_heldout)
    assert (summary["best_single"], summary["best_single_heldout"]) == (best.trial_id, best.ingredient_heldout)
    improved = [o.improved for o in offers]
    since = improved[::-1].index(True) if True in improved else len(offers)
    assert summary["trials_without_improvement"] == since


def test_the_greedy_soup_starts_from_a_given_state(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    trace = [{"step": step, "trial_id": i.trial_id} for step, i in enumerate(ingredients)]  # walked all three
    start = {"members": [ingredients[2].trial_id, ingredients[0].trial_id], "trace": trace}
    made = make_soups(ingredients, base_from_checkpoint(base_dir, tmp_path), SoupOptions(methods=["greedy", "uniform"]),
                      tmp_path, greedy_start=start)
    greedy, uniform = (next(r for r in made.results if r.name == n) for n in ("greedy", "uniform"))
    assert greedy.members == start["members"] and greedy.trace == start["trace"]  # no walk was made
    two = run_stage([ingredients[0], ingredients[2]], base_dir, tmp_path / "two", methods=["uniform"])
    for name, logits in two.results[0].logits.items():  # the soup of the two given members
        assert torch.allclose(logits, greedy.logits[name], atol=1e-5)
    assert len(uniform.members) == 3
    # a start that never saw one of the ingredients (e.g. a trial stopped early) is not reused
    partial_start = {"members": start["members"], "trace": trace[:2]}
    (tmp_path / "p").mkdir()
    made = make_soups(ingredients, base_from_checkpoint(base_dir, tmp_path / "p"), SoupOptions(methods=["greedy"]),
                      tmp_path / "p", greedy_start=partial_start)
    assert sorted(row["trial_id"] for row in made.results[0].trace) == sorted(i.trial_id for i in ingredients)


def test_replayed_offers_change_nothing(offered, soup_inputs, tmp_path):
    """After a driver kill and --resume, trials are offered again: the soup is the one without replays."""
    once, _, first_offers, _ = offered
    _, base_dir, ingredients = soup_inputs
    soup = AnytimeSoup(base_from_checkpoint(base_dir, tmp_path), torch.device("cpu"), ">=", 0.5, tmp_path)
    two, three, one = ingredients[1], ingredients[2], ingredients[0]
    offers = [soup.offer(i.trial_id, i.checkpoint) for i in (two, three, two, one, three, one, two)]
    offers += [soup.offer("broken", str(tmp_path / "no-such-checkpoint")) for _ in range(2)]
    replays = {2: 0, 4: 1, 5: 3, 6: 0, 8: 7}  # a replay returns the trial's first outcome
    assert all(offers[replay] is offers[first] for replay, first in replays.items())
    assert offers[3].as_dict() == first_offers[2].as_dict()  # trial one, as the soup without replays saw it
    assert soup.members == once.members and len(set(soup.members)) == len(soup.members)
    assert soup.trace == once.trace and soup.summary() == once.summary()
    ours, theirs = soup.walk.running.mean(), once.walk.running.mean()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
