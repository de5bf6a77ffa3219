"""Ingredient evaluation on Ray workers (soup.eval_workers): the same scores and soups as in-process,
bad ingredients left out by name, and workers that fail hand their ingredients back to the driver."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch

from soup.greedy import parse_args, soup_options
from soup.inputs.manifest import FINISHED, Ingredient
from soup.methods.options import SoupOptions
from soup.scoring.parallel import worker_count
from soup.scoring.score import score_ingredients
from soup.inputs.base import base_from_checkpoint
from soup.scoring.evaluation import build_evaluator
from tests.soup.conftest import run_stage
from trainers.checkpoint import WEIGHTS
from trainers.config import validate
from trainers.errors import UserError

METHODS = ["best", "uniform", "greedy", "ensemble"]


def assert_same_scores(serial, parallel):
    assert [s.trial_id for s in parallel] == [s.trial_id for s in serial]
    for one, other in zip(serial, parallel):
        assert other.heldout_top1 == one.heldout_top1, one.trial_id
        assert set(other.logits) == set(one.logits) == {"heldout", "test", "shift/sketch"}
        for name, logits in one.logits.items():
            assert torch.allclose(other.logits[name], logits, atol=1e-5), (one.trial_id, name)


@pytest.mark.slow
def test_two_ray_workers_give_the_serial_scores_and_soups(soup_inputs, ray_cluster, tmp_path, caplog):
    _, base_dir, ingredients = soup_inputs
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ingredients[0].checkpoint, corrupt)
    (corrupt / WEIGHTS).write_bytes(b"not a safetensors file")
    rows = [*ingredients, Ingredient("corrupt", FINISHED, str(corrupt), ingredients[0].base_checksum)]
    if ray_cluster.cluster_resources().get("GPU"):
        pytest.skip("compares CPU workers with the in-process path on the CPU")
    assert worker_count("auto") == 0  # Ray runs, but without two free GPUs: in-process
    serial = run_stage(rows, base_dir, tmp_path / "serial", methods=METHODS, eval_workers=0)
    with caplog.at_level(logging.INFO, logger="soup"):
        parallel = run_stage(rows, base_dir, tmp_path / "parallel", methods=METHODS, eval_workers=2)
    assert "evaluating 4 ingredients on 2 Ray workers (CPU)" in caplog.text
    assert "failed" not in caplog.text  # every logit came from a worker
    assert "not a safetensors file" in parallel.skipped["corrupt"]
    assert parallel.skipped == serial.skipped
    assert_same_scores(serial.scored, parallel.scored)
    soups = {r.name: r for r in serial.results}
    for result in parallel.results:
        assert result.members == soups[result.name].members, result.name
    for name in ("uniform", "greedy"):
        ours, theirs = soups[name].load_state(), next(r for r in parallel.results if r.name == name).load_state()
        assert all(torch.equal(theirs[k], v) for k, v in ours.items()), name
    top1 = {(r["method"], r["set"]): r["top1"] for r in serial.table}
    assert {(r["method"], r["set"]): r["top1"] for r in parallel.table} == pytest.approx(top1)


@pytest.mark.slow
def test_ingredients_of_failed_workers_are_evaluated_in_process(soup_inputs, ray_cluster, tmp_path, caplog):
    _, base_dir, ingredients = soup_inputs
    base = base_from_checkpoint(base_dir, tmp_path)
    evaluator = build_evaluator(base, torch.device("cpu"))
    serial = score_ingredients(ingredients, base, evaluator, 0.5, tmp_path, {}, eval_workers=0)
    # the workers cannot build their evaluation sets (not on storage they see): each of them dies
    unseen = base.config.with_overrides({"data.heldout": str(tmp_path / "not-shared" / "heldout.parquet")})
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="soup"):
        parallel = score_ingredients(ingredients, dataclasses.replace(base, config=unseen), evaluator, 0.5,
                                     tmp_path, skipped, eval_workers=2)
    assert skipped == {}
    assert caplog.text.count("failed (") == len(ingredients) and "evaluating it in this process" in caplog.text
    assert_same_scores(serial.scored, parallel.scored)


def test_eval_workers_option_and_flag():
    assert SoupOptions().eval_workers == "auto"
    given = soup_options(parse_args(["--ingredients", "x", "--eval-workers", "2"]))
    assert validate(SoupOptions, given, "soup").eval_workers == 2
    with pytest.raises(UserError, match="eval_workers: give 0"):
        validate(SoupOptions, {"eval_workers": -1}, "soup")
    with pytest.raises(UserError, match="eval_workers"):
        validate(SoupOptions, {"eval_workers": "many"}, "soup")


def test_auto_neither_starts_nor_imports_ray():
    code = "import sys; from soup.scoring.parallel import worker_count; print(worker_count('auto'), 'ray' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0", "False"]
