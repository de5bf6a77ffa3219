"""The anytime soup: offered trials one at a time, it equals the offline walk in the same order."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from soup.anytime import AnytimeSoup
from soup.stage import base_from_checkpoint
from tests.soup.conftest import run_stage
from trainers.errors import UserError


@pytest.fixture(scope="module")
def offered(soup_inputs, tmp_path_factory):
    """An anytime soup offered the three ingredients in the order 2, 3, 1, plus an unreadable one."""
    _, base_dir, ingredients = soup_inputs
    workdir = tmp_path_factory.mktemp("anytime")
    soup = AnytimeSoup(base_from_checkpoint(base_dir, workdir), torch.device("cpu"), ">=", 0.5, workdir)
    order = [ingredients[1], ingredients[2], ingredients[0]]
    offers = [soup.offer(i.trial_id, i.checkpoint) for i in order]
    offers.append(soup.offer("broken", str(workdir / "no-such-checkpoint")))
    return soup, order, offers


def test_offers_follow_the_greedy_rule_and_report_the_gain(offered):
    soup, order, offers = offered
    first = offers[0]
    assert first.accepted and first.order == 0 and first.soup_size == 1
    assert first.gain == pytest.approx(first.ingredient_heldout - soup.zeroshot_heldout)
    before = first.soup_heldout
    for offer in offers[1:3]:
        assert offer.soup_heldout >= before if offer.accepted else offer.soup_heldout == before
        assert offer.gain == (pytest.approx(offer.soup_heldout - before) if offer.accepted else 0.0)
        assert offer.improved == (offer.soup_heldout > before)
        before = offer.soup_heldout
    broken = offers[3]
    assert not broken.accepted and broken.gain == 0.0 and "unreadable checkpoint" in broken.reason
    assert math.isnan(broken.ingredient_heldout)
    summary = soup.summary()
    assert summary["members"] == [o.trial_id for o in offers if o.accepted]
    assert summary["offers"] == 4 and summary["soup_heldout"] == offers[-1].soup_heldout
    best = max(offers[:3], key=lambda o: o.ingredient_heldout)
    assert (summary["best_single"], summary["best_single_heldout"]) == (best.trial_id, best.ingredient_heldout)
    since = next(i for i, o in enumerate(reversed(offers)) if o.improved) if any(o.improved for o in offers) else 4
    assert summary["trials_without_improvement"] == since


def test_offline_anytime_method_equals_the_running_soup(offered, soup_inputs, tmp_path):
    soup, order, offers = offered
    _, base_dir, _ = soup_inputs
    ingredients = [dataclasses.replace(i, offer_order=n) for n, i in enumerate(order)]
    offline = run_stage(ingredients, base_dir, tmp_path / "offline", methods=["anytime"])
    (walked,) = offline.results
    assert walked.members == soup.summary()["members"]
    assert [row["accepted"] for row in walked.trace] == [o.accepted for o in offers[:3]]
    assert walked.trace[-1]["soup_heldout"] == pytest.approx(soup.summary()["soup_heldout"])

    from soup.stage import make_soups  # started from the running soup's members: the same model
    from soup.options import SoupOptions
    workdir = tmp_path / "started"
    workdir.mkdir()
    started = make_soups(ingredients, base_from_checkpoint(base_dir, workdir), SoupOptions(methods=["anytime"]),
                         workdir, anytime_members=soup.summary()["members"])
    (resumed,) = started.results
    assert resumed.members == walked.members and resumed.trace == []
    for name, logits in walked.logits.items():
        assert torch.allclose(logits, resumed.logits[name], atol=1e-5)


def test_anytime_method_needs_an_offer_order(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    with pytest.raises(UserError, match="no trial of this sweep was offered to an anytime soup"):
        run_stage(ingredients, base_dir, tmp_path, methods=["anytime"])
