"""Golden tests of the soup methods: scripted evaluators and hand-made state dicts where the answer is
known by hand, real tiny checkpoints where the answer is a closed form."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from soup.methods.context import SoupContext
from soup.scoring.evaluation import Scored
from soup.methods.greedy import greedy_select, greedy_soup
from soup.inputs.manifest import FINISHED, Ingredient
from soup.methods.learned import heldout_gradient, inner_products, mixed
from soup.methods.ensemble import greedy_ensemble
from soup.methods.model_stock import merge_layer
from soup.methods.options import SoupOptions
from soup.inputs.base import base_from_checkpoint
from soup.scoring.evaluation import build_evaluator
from soup.inputs.tensorfile import TensorFile
from soup.methods.wiseft import interpolation
from tests.soup.conftest import run_stage
from trainers.checkpoint import WEIGHTS, load_weights


class ScriptedEvaluator:
    """Held-out accuracy scripted by which ingredients are in the average (read from its weights)."""

    def __init__(self, scores: dict[frozenset, float]):
        self.scores = scores

    def heldout_top1(self, state, soup=True):
        return self.scores.get(frozenset("abcd"[i] for i, v in enumerate(state["id"].tolist()) if v > 0), 0.0)

    def logits(self, state, soup=False):
        return {"heldout": torch.zeros(1, 2)}

    def labels(self, name):
        return torch.tensor([0])


def one_hot(scored: Scored) -> dict[str, torch.Tensor]:
    return {"id": torch.eye(4)["abcd".index(scored.trial_id)]}


SCORES = {frozenset(k): v for k, v in {"ab": 0.9, "abc": 0.88, "abd": 0.95, "ac": 0.85, "ad": 0.92}.items()}


def scripted_pool() -> list[Scored]:
    return [Scored(Ingredient(n, FINISHED), {}, h) for n, h in zip("dbca", [0.6, 0.8, 0.7, 0.9])]


@pytest.mark.parametrize("tie_rule, expected", [(">=", ["a", "b", "d"]), (">", ["a", "d"])])
def test_greedy_under_both_tie_rules(tie_rule, expected):
    ctx = SoupContext(ScriptedEvaluator(SCORES), SoupOptions(tie_rule=tie_rule), load=one_hot)
    result = greedy_soup(scripted_pool(), ctx)
    assert result.members == expected
    assert [row["trial_id"] for row in result.trace] == ["a", "b", "c", "d"]  # sorted by held-out
    assert [row["accepted"] for row in result.trace] == [True, *(n in expected for n in "bcd")]
    assert [row["candidate_heldout"] for row in result.trace] == [0.9, 0.9, 0.88 if tie_rule == ">=" else 0.85,
                                                                  0.95 if tie_rule == ">=" else 0.92]
    assert result.weights is None and not result.tables  # no spool directory, no repeats asked for


def test_greedy_over_a_random_order_and_the_spread_of_repeats():
    ctx = SoupContext(ScriptedEvaluator({**SCORES, frozenset("cd"): 0.75, frozenset("bcd"): 0.7}),
                      SoupOptions(greedy_repeats=4, greedy_seed=3), load=one_hot)
    pool = {s.trial_id: s for s in scripted_pool()}
    _, members, trace = greedy_select([pool[n] for n in "cdba"], ctx)
    assert members == ["c", "d"] and [r["accepted"] for r in trace] == [True, True, False, False]
    result = greedy_soup(list(pool.values()), ctx)
    rows = result.tables["repeats"]
    assert len(rows) == 4 and all(sorted(r["order"].split(",")) == list("abcd") for r in rows)
    assert len({r["order"] for r in rows}) > 1  # really different orders
    assert rows == greedy_soup(list(pool.values()), ctx).tables["repeats"]  # seeded: reproducible
    assert result.metrics["repeats/heldout/top1_mean"] == 1.0 and result.metrics["repeats/heldout/top1_std"] == 0.0


class LabelsOnly:
    def __init__(self, labels):
        self._labels = labels

    def labels(self, name):
        return self._labels


@pytest.mark.parametrize("tie_rule, expected", [(">=", ["a", "b", "c"]), (">", ["a", "c"])])
def test_greedy_ensemble_under_both_tie_rules(tie_rule, expected):
    logits = {"a": [[2, 0], [2, 0], [0, 2], [2, 0]],  # 3/4 right
              "b": [[2, 0], [0, 1], [0, 2], [2, 0]],  # 2/4; with a: still 3/4, a tie
              "c": [[0, .1], [0, .1], [0, 2], [0, 5]]}  # 2/4; with a (and b): 4/4
    pool = [Scored(Ingredient(n, FINISHED), {"heldout": torch.tensor(v, dtype=torch.float32)}, h)
            for (n, v), h in zip(logits.items(), [0.75, 0.5, 0.5])]
    ctx = SoupContext(LabelsOnly(torch.tensor([0, 0, 1, 1])), SoupOptions(tie_rule=tie_rule))
    result = greedy_ensemble(pool, ctx)
    assert result.members == expected and result.cost == len(expected)
    assert [r["candidate_heldout"] for r in result.trace] == [0.75, 0.75, 1.0]
    assert torch.equal(result.logits["heldout"], torch.stack([pool["abc".index(n)].logits["heldout"]
                                                              for n in expected]).mean(0))


def test_model_stock_layer_matches_the_closed_form_for_two_models():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    shared = torch.randn(6, 5, generator=gen)
    a = base + 0.1 * (shared + torch.randn(6, 5, generator=gen))
    b = base + 0.1 * (shared + torch.randn(6, 5, generator=gen))
    merged, cos, t = merge_layer(base, [a, b])
    da, db = (a.double() - base.double()).flatten(), (b.double() - base.double()).flatten()
    expected_cos = (da @ db / (da.norm() * db.norm())).item()
    expected_t = 2 * expected_cos / (1 + expected_cos)
    assert 0.2 < expected_cos < 0.9  # a real angle, not a degenerate case
    assert cos == pytest.approx(expected_cos, abs=1e-12) and t == pytest.approx(expected_t, abs=1e-12)
    closed_form = expected_t * (a.double() + b.double()) / 2 + (1 - expected_t) * base.double()
    assert torch.allclose(merged.double(), closed_form, atol=1e-6)


def test_model_stock_edge_cases():
    base = torch.ones(4)
    assert torch.equal(merge_layer(base, [base.clone(), base.clone()])[0], base)  # a frozen layer stays
    merged, cos, t = merge_layer(base, [base + torch.tensor([1., 0, 0, 0]), base - torch.tensor([1., 0, 0, 0])])
    assert cos == pytest.approx(-1) and t == 0 and torch.equal(merged, base)  # opposite deltas: the base
    merged, cos, t = merge_layer(base, [base + 1, base + 2, base + 3])  # parallel deltas: the plain average
    assert cos == pytest.approx(1) and t == pytest.approx(1) and torch.allclose(merged, base + 2)


def test_model_stock_on_two_real_checkpoints_is_the_closed_form(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    outcome = run_stage(ingredients[:2], base_dir, tmp_path, methods=["model_stock"])
    soup = outcome.results[0].load_state()
    base, (a, b) = load_weights(base_dir), [load_weights(i.checkpoint) for i in ingredients[:2]]
    moved = 0
    for key, value in soup.items():
        da, db = (a[key].double() - base[key].double()).flatten(), (b[key].double() - base[key].double()).flatten()
        if da.norm() == 0 or db.norm() == 0:
            assert torch.allclose(value, (a[key] + b[key]) / 2), key
            continue
        cos = (da @ db / (da.norm() * db.norm())).item()
        t = min(1.0, max(0.0, 2 * cos / (1 + cos)))
        expected = t * (a[key].double() + b[key].double()) / 2 + (1 - t) * base[key].double()
        assert torch.allclose(value.double(), expected, atol=1e-6), key
        moved += 1
    assert moved > 10
    ratios = outcome.results[0].tables["ratios"]
    assert len(ratios) == len(soup) and any(0 < r["t"] < 1 for r in ratios)


def test_wiseft_endpoints_reproduce_the_endpoints_predictions_exactly(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    outcome = run_stage(ingredients, base_dir, tmp_path, methods=["zeroshot", "greedy", "wiseft"],
                        wiseft_alphas=[0, 0.5, 1])
    results = {r.name: r for r in outcome.results}
    curve = results["wiseft_greedy"].tables["curve"]
    top1 = {(r["method"], r["set"]): r["top1"] for r in outcome.table}
    for row in curve:
        if row["alpha"] in (0, 1):
            endpoint = "zeroshot" if row["alpha"] == 0 else "greedy"
            assert row["top1"] == top1[(endpoint, row["set"])], row
    evaluator = build_evaluator(base_from_checkpoint(base_dir, tmp_path), torch.device("cpu"))
    base, greedy = TensorFile(f"{base_dir}/{WEIGHTS}"), TensorFile(results["greedy"].weights / WEIGHTS)
    keys = evaluator.targets.keys()
    for alpha, endpoint in ((0, "zeroshot"), (1, "greedy")):
        logits = evaluator.logits(interpolation(base, greedy, alpha, keys))
        assert all(torch.equal(logits[s], results[endpoint].logits[s]) for s in logits), alpha
    halfway = evaluator.logits(interpolation(base, greedy, 0.5, keys))
    assert not torch.equal(halfway["test"], results["greedy"].logits["test"])
    best_alpha = results["wiseft_greedy"].metrics["alpha"]
    assert results["wiseft_greedy"].logits["heldout"].shape == results["greedy"].logits["heldout"].shape
    assert top1[("wiseft_greedy", "heldout")] == max(r["top1"] for r in curve if r["set"] == "heldout")
    assert best_alpha in (0, 0.5, 1)


def test_ensemble_and_uniform_soup_of_identical_models_are_the_model(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    same = [Ingredient(f"copy{i}", FINISHED, ingredients[0].checkpoint, ingredients[0].base_checksum)
            for i in range(3)]
    outcome = run_stage(same, base_dir, tmp_path, methods=["best", "uniform", "ensemble"])
    best, uniform, ens = outcome.results
    assert ens.cost == 3 and uniform.cost == 1
    for name, logits in best.logits.items():
        assert torch.equal(ens.logits[name].argmax(-1), logits.argmax(-1))
        assert torch.allclose(ens.logits[name], logits, atol=1e-5)
        assert torch.allclose(uniform.logits[name], logits, atol=1e-4)


@pytest.mark.parametrize("per_layer", [False, True])
def test_learned_soup_gradient_equals_autograd_through_the_mixture(soup_inputs, tmp_path, per_layer):
    _, base_dir, ingredients = soup_inputs
    outcome = run_stage(ingredients[:2], base_dir, tmp_path, methods=["best"])
    evaluator = build_evaluator(base_from_checkpoint(base_dir, tmp_path), torch.device("cpu"))
    files = [TensorFile(s.weights) for s in outcome.scored]
    keys = [k for k, v in evaluator.targets.items() if v.is_floating_point()]
    mixing = torch.tensor([[0.3], [-0.2]]).repeat(1, len(keys) if per_layer else 1)
    mixing += 0.1 * torch.randn(mixing.shape, generator=torch.Generator().manual_seed(0))
    mixing.requires_grad_(True)
    log_temperature = torch.tensor(0.2, requires_grad=True)
    # ours: one held-out pass for dL/dθ, then inner products with each ingredient
    evaluator.load(mixed(files, evaluator.targets, keys, torch.softmax(mixing, 0).detach()))
    heldout_gradient(evaluator, log_temperature)
    (torch.softmax(mixing, 0) * inner_products(evaluator, files, keys)).sum().backward()
    ours, our_temperature_grad = mixing.grad.clone(), log_temperature.grad.clone()
    # reference: autograd straight through θ(α) = Σ α_i θ_i
    mixing.grad, log_temperature.grad = None, None
    alphas = torch.softmax(mixing, 0)
    state = {k: sum(alphas[i, j if per_layer else 0] * f.get(k) for i, f in enumerate(files))
             for j, k in enumerate(keys)}
    heldout = evaluator.heldout
    logits = torch.func.functional_call(evaluator.model, state, (heldout.images.float() / 255,))
    F.cross_entropy(logits * log_temperature.exp(), heldout.labels).backward()
    assert torch.allclose(ours, mixing.grad, rtol=1e-3, atol=1e-6)
    assert torch.allclose(our_temperature_grad, log_temperature.grad, rtol=1e-4)


def test_learned_soups_lower_the_heldout_loss_and_stay_convex(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    outcome = run_stage(ingredients, base_dir, tmp_path, methods=["learned", "learned_layerwise"], learned_steps=5,
                        learned_lr=0.02)
    for result in outcome.results:
        # Gradient descent promises a lower loss at the end, not at every step (Adam may overshoot once)
        losses = [row["heldout_loss"] for row in result.trace]
        assert len(losses) == 5 and losses[-1] < losses[0], (result.name, losses)
        weights = result.tables["weights"]
        layers = {row["layer"] for row in weights}
        assert len(weights) == 3 * len(layers) and (len(layers) == 1) == (result.name == "learned")
        for layer in layers:
            assert sum(r["weight"] for r in weights if r["layer"] == layer) == pytest.approx(1, abs=1e-6)
