"""The soup stage on real tiny checkpoints trained in-process: methods, leaving out bad ingredients."""
from __future__ import annotations

import shutil

import pytest
import torch

from soup.inputs.manifest import DIVERGED, FAILED, FINISHED, STOPPED, Ingredient, read_manifest, write_manifest
from soup.methods.spec import METHODS, parse_methods
from soup.outputs.report import format_table
from tests.soup.conftest import run_stage, train_ingredients
from trainers.base import write_base_checkpoint
from trainers.baselines import training_free_baselines
from trainers.checkpoint import META, WEIGHTS, load_weights, read_meta
from trainers.errors import UserError


def test_methods_on_real_checkpoints(soup_inputs, tmp_path):
    cfg, base_dir, ingredients = soup_inputs
    outcome = run_stage(ingredients, base_dir, tmp_path, methods=list(METHODS), wiseft_alphas=[0, 0.5, 1],
                        learned_steps=3)
    results = {r.name: r for r in outcome.results}
    assert list(results) == ["zeroshot", "best", "uniform", "greedy", "learned", "learned_layerwise",
                             "model_stock", "wiseft_greedy", "wiseft_best", "ensemble", "greedy_ensemble"]
    best_heldout = max(s.heldout_top1 for s in outcome.scored)
    cell = {(r["method"], r["set"]): r for r in outcome.table}
    assert cell[("greedy", "heldout")]["top1"] >= best_heldout
    assert cell[("best", "heldout")]["top1"] == best_heldout
    assert set(results["uniform"].members) == {"trial1", "trial2", "trial3"}
    assert results["ensemble"].cost == 3 and results["greedy"].cost == 1
    assert results["greedy_ensemble"].cost == len(results["greedy_ensemble"].members)
    assert {"heldout", "test", "shift/sketch", "shift/avg"} == {r["set"] for r in outcome.table}
    for name in ("uniform", "greedy", "learned", "learned_layerwise", "model_stock", "wiseft_greedy"):
        meta = read_meta(results[name].weights)
        assert meta["method"] == name and meta["classes"] == read_meta(base_dir)["classes"]
        assert set(meta["lineage"]) == set(results[name].members)
    # the uniform soup, as evaluated and saved, is the mean of the three checkpoints
    states = [load_weights(i.checkpoint) for i in ingredients]
    for key, value in results["uniform"].load_state().items():
        assert torch.allclose(value, torch.stack([s[key] for s in states]).mean(0), atol=1e-6), key
    # every row holds the three metrics, and McNemar against the best model sits on test rows only
    for row in outcome.table:
        assert 0 <= row["top1"] <= 1 and 0 <= row["macro_f1"] <= 1 and 0 <= row["ece"] <= 1
        has_test = row["set"] == "test" and not row["method"].startswith("trial:") and row["method"] != "best"
        assert (row["mcnemar_p"] is not None) == has_test
    assert {r["method"] for r in outcome.per_class} == set(results)


def test_bad_ingredients_are_left_out_by_name(soup_inputs, tmp_path):
    cfg, base_dir, ingredients = soup_inputs
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ingredients[0].checkpoint, corrupt)
    (corrupt / WEIGHTS).write_bytes(b"not a safetensors file")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(ingredients[1].checkpoint, incomplete)
    meta = read_meta(incomplete)
    (incomplete / META).write_text(__import__("json").dumps({**meta, "epoch": 1}))
    foreign_cfg = cfg.with_overrides({"model.pretrained": None})
    write_base_checkpoint(foreign_cfg, tmp_path / "foreign-base")
    foreign = train_ingredients(foreign_cfg, str(tmp_path / "foreign-base"), tmp_path, [9])[0]
    rows = [*ingredients[1:], Ingredient("corrupt", FINISHED, str(corrupt), ingredients[0].base_checksum),
            foreign, Ingredient("crashed", FAILED, reason="worker died"),
            Ingredient("nan", DIVERGED, reason="train/loss is nan"),
            Ingredient("nan-metrics", FINISHED, ingredients[0].checkpoint, metrics={"val/loss": float("nan")}),
            Ingredient("incomplete", FINISHED, str(incomplete), ingredients[1].base_checksum),
            Ingredient("asha", STOPPED, str(incomplete), ingredients[1].base_checksum),
            Ingredient("removed", FINISHED, str(tmp_path / "removed-since"), ingredients[0].base_checksum)]
    manifest = tmp_path / "ingredients.parquet"
    write_manifest(str(manifest), rows)
    outcome = run_stage(read_manifest(str(manifest)), base_dir, tmp_path / "work", methods=["greedy", "uniform"])
    assert "unreadable checkpoint" in outcome.skipped["corrupt"] and str(corrupt) in outcome.skipped["corrupt"]
    assert "not a safetensors file" in outcome.skipped["corrupt"]
    assert "different initialisation" in outcome.skipped["trial9"]
    assert outcome.skipped["crashed"] == "status failed: worker died"
    assert outcome.skipped["nan"] == "status diverged: train/loss is nan"
    assert outcome.skipped["nan-metrics"] == "diverged: val/loss = nan"
    assert outcome.skipped["incomplete"] == "incomplete: stopped at epoch 1 of 2"
    assert f"{tmp_path / 'removed-since'} does not exist: deleted or moved after" in outcome.skipped["removed"]
    assert [s.trial_id for s in outcome.scored] == ["trial2", "trial3", "asha"]  # ASHA stops on purpose
    assert set(next(r for r in outcome.results if r.name == "uniform").members) == {"trial2", "trial3", "asha"}


def test_no_usable_ingredient_is_a_user_error(soup_inputs, tmp_path):
    _, base_dir, _ = soup_inputs
    with pytest.raises(UserError, match="no finished trials \\(1 trials: t: status failed"):
        run_stage([Ingredient("t", FAILED)], base_dir, tmp_path, methods=["greedy"])
    corrupt = Ingredient("c", FINISHED, "/no/such/checkpoint", "x")
    with pytest.raises(UserError, match="no usable ingredients among 1 trials: c: different initialisation"):
        run_stage([corrupt], base_dir, tmp_path, methods=["greedy"])


def test_parse_methods():
    assert parse_methods("ensemble,greedy") == ["greedy", "ensemble"]
    with pytest.raises(UserError, match="unknown soup methods \\['soupy'\\]"):
        parse_methods("greedy,soupy")


def test_the_sweeps_training_free_baselines_sit_beside_the_methods(soup_inputs, tmp_path, caplog):
    cfg, base_dir, ingredients = soup_inputs
    base_copy = tmp_path / "base"
    shutil.copytree(base_dir, base_copy)
    baselines = training_free_baselines(cfg, torch.device("cpu"), shots=4)
    baselines.save(base_copy)  # as the sweep driver writes them beside its base
    outcome = run_stage(ingredients, str(base_copy), tmp_path / "work", methods=["zeroshot", "greedy"])
    cell = {(r["method"], r["set"]): r for r in outcome.table}
    for name in ("heldout", "test", "shift/sketch", "shift/avg"):
        # the base is the zero-shot model: the baseline and the soup stage's zero-shot row must agree
        assert cell[("baseline:zeroshot", name)]["top1"] == pytest.approx(cell[("zeroshot", name)]["top1"])
        assert cell[("baseline:tip_adapter", name)]["cost"] == 1
    tip_test = baselines.metrics["tip_adapter"]["test"]
    assert cell[("baseline:tip_adapter", "test")]["top1"] == pytest.approx(tip_test["top1"])
    assert cell[("baseline:tip_adapter", "test")]["mcnemar_p"] is not None
    report = format_table(outcome)
    lines = [line.split()[0] for line in report.splitlines()]
    assert lines[-2:] == ["baseline:zeroshot", "baseline:tip_adapter"] and "trial:" not in report

    baselines.labels["test"] = baselines.labels["test"].roll(1)  # computed on other data: not shown
    baselines.save(base_copy)
    outcome = run_stage(ingredients, str(base_copy), tmp_path / "stale", methods=["greedy"])
    assert not [r for r in outcome.table if r["method"].startswith("baseline:")]
    assert "not showing the training-free baselines" in caplog.text
