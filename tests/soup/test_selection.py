"""Selection sees only held-out, by type; and the method registry is consistent."""
from __future__ import annotations

import pytest
import torch

from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from soup.methods.context import MethodResult
from soup.methods.options import SoupOptions
from soup.methods.spec import METHODS, NEEDS_BASE, SOUP_METHODS, Kind, MethodSpec, order_problems
from soup.scoring.evaluation import HeldoutOnly, build_evaluator
from soup.scoring.sealed import Sealed, SelectionLeak, unseal
from trainers.checkpoint import WEIGHTS
from trainers.device import resolve_device


def test_sealed_logits_give_heldout_and_refuse_every_other_set():
    sealed = Sealed({"heldout": torch.ones(2, 3), "test": torch.zeros(2, 3), "shift/sketch": torch.zeros(2, 3)})
    assert torch.equal(sealed["heldout"], torch.ones(2, 3)) and torch.equal(sealed.heldout, torch.ones(2, 3))
    for name in ("test", "shift/sketch"):
        with pytest.raises(SelectionLeak, match="heldout"):
            sealed[name]
    with pytest.raises(AttributeError):
        sealed.__logits  # name-mangled and slotted: not an attribute a method can read
    assert list(sealed) == ["heldout", "test", "shift/sketch"]  # the names only
    assert torch.equal(unseal(sealed)["test"], torch.zeros(2, 3))  # the report's way in


def peeking_method(pool, ctx) -> MethodResult:
    """A method that tries to choose its member on test accuracy."""
    best = max(pool, key=lambda s: (s.logits["test"].argmax(-1) == ctx.evaluator.labels("test")).float().mean())
    return MethodResult("peek", best.logits, 1, [best.trial_id])


def test_a_method_that_reads_test_raises(soup_inputs, tmp_path, monkeypatch):
    cfg, base_dir, ingredients = soup_inputs
    monkeypatch.setitem(METHODS, "peek", MethodSpec("peek", Kind.REFERENCE, f"{__name__}:peeking_method"))
    with pytest.raises(SelectionLeak, match="'test'"):
        make_soups(ingredients, base_from_checkpoint(base_dir, tmp_path), SoupOptions(methods=["peek"]), tmp_path)


def test_methods_see_neither_test_labels_nor_the_evaluation_sets(soup_inputs, tmp_path):
    cfg, base_dir, _ = soup_inputs
    view = HeldoutOnly(build_evaluator(base_from_checkpoint(base_dir, tmp_path), resolve_device("cpu")))
    assert len(view.labels("heldout")) == len(view.heldout.labels)
    with pytest.raises(SelectionLeak):
        view.labels("test")
    with pytest.raises(SelectionLeak):
        view.sets


def choices(outcome) -> dict:
    """What the methods chose: members, α, learned mixing weights and the soups' weights."""
    out = {}
    for r in outcome.results:
        out[r.name] = {"members": r.members, "alpha": r.metrics.get("alpha"),
                       "mixing": [row["weight"] for row in r.tables.get("weights", [])],
                       "weights": (r.weights / WEIGHTS).read_bytes() if r.weights else None}
    return out


def test_changing_every_test_label_changes_no_choice(soup_inputs, tmp_path):
    cfg, base_dir, ingredients = soup_inputs
    base = base_from_checkpoint(base_dir, tmp_path)
    options = SoupOptions(methods=list(METHODS), wiseft_alphas=[0, 0.5, 1], learned_steps=2)
    runs = []
    for name, shift in (("same", 0), ("relabelled", 1)):
        evaluator = build_evaluator(base, resolve_device("cpu"))
        test = next(s for s in evaluator.sets if s.name == "test")
        test.labels = (test.labels + shift) % len(base.classes)  # every test label changed
        runs.append(make_soups(ingredients, base, options, tmp_path / name, evaluator=evaluator))
    same, relabelled = runs
    assert choices(same) == choices(relabelled)
    top1 = [{(r["method"], r["set"]): r["top1"] for r in run.table} for run in runs]
    assert top1[0][("greedy", "test")] != top1[1][("greedy", "test")]  # the report did see the new labels
    assert top1[0][("greedy", "heldout")] == top1[1][("greedy", "heldout")]


def test_the_registry_runs_every_method_after_what_it_reads():
    assert not order_problems(METHODS)
    assert order_problems({"a": MethodSpec("a", Kind.SOUP, "x:a", after=("b",)),
                           "b": MethodSpec("b", Kind.SOUP, "x:b")}) == ["a reads b, declared after it"]
    top_k = MethodSpec("top_k", Kind.SOUP, "x:top_k")  # a soup registered after wiseft, which reads every soup
    assert order_problems({**METHODS, "top_k": top_k}) == ["wiseft reads top_k, declared after it"]
    assert SOUP_METHODS == ["uniform", "greedy", "learned", "learned_layerwise", "model_stock"]
    assert NEEDS_BASE == {"zeroshot", "model_stock", "wiseft"}
    for spec in METHODS.values():
        assert callable(spec.function()), spec.name
    options = SoupOptions()  # every method's parameters are options, validated with them
    assert {name for spec in METHODS.values() if spec.params for name in spec.params.model_fields} <= set(
        type(options).model_fields)
