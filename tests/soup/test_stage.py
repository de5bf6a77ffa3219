"""The soup stage on real tiny checkpoints trained in-process: methods, leaving out bad ingredients."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from soup.ingredients import FAILED, FINISHED, Ingredient, read_manifest, write_manifest
from soup.methods import METHODS, SoupContext, greedy_soup, parse_methods
from soup.stage import make_soups
from tests.conftest import data_section
from trainers.base import write_base_checkpoint
from trainers.checkpoint import WEIGHTS, load_weights, read_meta
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.loop import RunContext, fit


def train_ingredients(cfg: TrainConfig, base_dir: str, out: Path, seeds: list[int]) -> list[Ingredient]:
    rows = []
    for seed in seeds:
        target = out / f"trial{seed}"
        run_cfg = cfg.with_overrides({"seed": seed, "optim.lr": 2e-4 * (1 + seed % 3)})
        fit(run_cfg, RunContext(base_dir=base_dir, trial_id=f"trial{seed}",
                                report=lambda m, d, t=target: shutil.copytree(d, t, dirs_exist_ok=True)))
        rows.append(Ingredient(f"trial{seed}", FINISHED, str(target), read_meta(target)["base_checksum"]))
    return rows


@pytest.fixture(scope="module")
def soup_inputs(demo_data, pretrained_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soup")
    cfg = TrainConfig.model_validate({"data": data_section(demo_data), "model": {"pretrained": pretrained_file},
                                      "optim": {"epochs": 2, "warmup_steps": 2}})
    write_base_checkpoint(cfg, tmp / "base")
    return cfg, str(tmp / "base"), train_ingredients(cfg, str(tmp / "base"), tmp, [1, 2, 3])


def test_methods_on_real_checkpoints(soup_inputs):
    cfg, base_dir, ingredients = soup_inputs
    outcome = make_soups(ingredients, base_dir, list(METHODS), torch.device("cpu"))
    results = {r.name: r for r in outcome.results}
    best_heldout = max(s.heldout_top1 for s in outcome.scored)
    cell = {(r["method"], r["set"]): r["top1"] for r in outcome.table}
    assert cell[("greedy", "heldout")] >= best_heldout
    assert cell[("best", "heldout")] == best_heldout
    assert set(results["uniform"].members) == {"trial1", "trial2", "trial3"}
    assert results["ensemble"].cost == 3 and results["greedy"].cost == 1
    assert {"heldout", "test", "shift/sketch"} == {r["set"] for r in outcome.table}
    # the uniform soup really is the mean of the three checkpoints
    states = [load_weights(i.checkpoint) for i in ingredients]
    for key, value in results["uniform"].state.items():
        assert torch.allclose(value, torch.stack([s[key] for s in states]).mean(0), atol=1e-6), key
    # an ensemble of the cached logits of one model is that model
    one = make_soups(ingredients[:1], base_dir, ["best", "ensemble"], torch.device("cpu"))
    assert all(torch.equal(one.results[0].logits[k], one.results[1].logits[k]) for k in one.results[0].logits)


def test_bad_ingredients_are_left_out_by_name(soup_inputs, tmp_path):
    cfg, base_dir, ingredients = soup_inputs
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ingredients[0].checkpoint, corrupt)
    (corrupt / WEIGHTS).write_bytes(b"not a safetensors file")
    foreign_cfg = cfg.with_overrides({"model.pretrained": None})
    write_base_checkpoint(foreign_cfg, tmp_path / "foreign-base")
    foreign = train_ingredients(foreign_cfg, str(tmp_path / "foreign-base"), tmp_path, [9])[0]
    rows = [*ingredients[1:], Ingredient("corrupt", FINISHED, str(corrupt), ingredients[0].base_checksum),
            foreign, Ingredient("crashed", FAILED, reason="worker died")]
    manifest = tmp_path / "ingredients.parquet"
    write_manifest(str(manifest), rows)
    outcome = make_soups(read_manifest(str(manifest)), base_dir, ["greedy", "uniform"], torch.device("cpu"))
    assert "unreadable checkpoint" in outcome.skipped["corrupt"] and str(corrupt) in outcome.skipped["corrupt"]
    assert "different initialisation" in outcome.skipped["trial9"]
    assert outcome.skipped["crashed"] == "status failed: worker died"
    assert [s.trial_id for s in outcome.scored] == ["trial2", "trial3"]
    assert set(outcome.results[1].members) == {"trial2", "trial3"}


def test_no_usable_ingredient_is_a_user_error(soup_inputs):
    _, base_dir, _ = soup_inputs
    with pytest.raises(UserError, match="no finished trials \\(1 trials: t: status failed"):
        make_soups([Ingredient("t", FAILED)], base_dir, ["greedy"], torch.device("cpu"))
    corrupt = Ingredient("c", FINISHED, "/no/such/checkpoint", "x")
    with pytest.raises(UserError, match="no usable ingredients among 1 trials: c: different initialisation"):
        make_soups([corrupt], base_dir, ["greedy"], torch.device("cpu"))


class ScriptedEvaluator:
    """Held-out accuracy scripted by which ingredients are in the average (read from its weights)."""

    def __init__(self, scores: dict[frozenset, float]):
        self.scores = scores

    def heldout_top1(self, state):
        return self.scores[frozenset("abcd"[i] for i, v in enumerate(state["id"].tolist()) if v > 0)]

    def logits(self, state):
        return {"heldout": torch.zeros(1, 2)}


@pytest.mark.parametrize("tie_rule, expected", [(">=", ["a", "b", "d"]), (">", ["a", "d"])])
def test_greedy_under_both_tie_rules(tie_rule, expected):
    from soup.evaluation import Scored
    pool = [Scored(Ingredient(n, FINISHED), {}, h) for n, h in zip("dbca", [0.6, 0.8, 0.7, 0.9])]
    scores = {frozenset(k): v for k, v in {"ab": 0.9, "abc": 0.88, "abd": 0.95, "ac": 0.85, "ad": 0.92}.items()}
    one_hot = lambda scored: {"id": torch.eye(4)["abcd".index(scored.trial_id)]}  # noqa: E731
    result = greedy_soup(pool, SoupContext(ScriptedEvaluator(scores), {}, tie_rule, load=one_hot))
    assert result.members == expected
    assert [row["trial_id"] for row in result.trace] == ["a", "b", "c", "d"]  # sorted by held-out
    assert [row["accepted"] for row in result.trace] == [True, *(n in expected for n in "bcd")]


def test_parse_methods():
    assert parse_methods("ensemble,greedy") == ["greedy", "ensemble"]
    with pytest.raises(UserError, match="unknown \\['soupy'\\]"):
        parse_methods("greedy,soupy")
