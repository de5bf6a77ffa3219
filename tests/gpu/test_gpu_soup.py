"""The soup stage on the GPU makes the soups the CPU makes: same members, same weights, same table."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.gpu import NEEDS_CUDA
from soup.methods.spec import METHODS
from soup.methods.options import SoupOptions
from soup.scoring.evaluation import Evaluator
from soup.scoring.splits import load_eval_sets
from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from tests.soup.conftest import soup_inputs  # noqa: F401  (a fixture: three tiny ingredients and their base)
from trainers.model import build_classifier

pytestmark = [pytest.mark.gpu, NEEDS_CUDA]
CPU = torch.device("cpu")
WEIGHTED = ["uniform", "greedy", "model_stock", "wiseft_greedy", "wiseft_best"]  # the soups made of weights


def evaluator_on(base, device: torch.device, cpu_sets) -> Evaluator:
    """The stage's evaluator on `device`, holding the CPU-decoded evaluation sets (the same pixels on both
    devices: decoding is compared with PIL elsewhere), in fp32 without TF32 (see `exact_fp32`)."""
    sets = [dataclasses.replace(s, images=s.images.to(device), labels=s.labels.to(device),
                                covers=None if s.covers is None else s.covers.to(device)) for s in cpu_sets]
    return Evaluator(build_classifier(base.config.model, len(base.classes)), sets, device, "fp32")


def stage(ingredients, base, workdir, evaluator=None, **options):
    """make_soups with the default methods (or `options`), WiSE-FT at three α."""
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = SoupOptions(**{"wiseft_alphas": [0.0, 0.5, 1.0], **options})
    return make_soups(ingredients, base, chosen, workdir, evaluator=evaluator)


def test_the_soup_stage_on_the_gpu_makes_the_cpu_soups(exact_fp32, soup_inputs, tmp_path):  # noqa: F811
    cuda = exact_fp32
    _, base_dir, ingredients = soup_inputs
    base = base_from_checkpoint(base_dir, tmp_path)
    base = dataclasses.replace(base, config=base.config.with_overrides({"precision": "fp32"}))
    cpu_sets = load_eval_sets(base.config.data, build_classifier(base.config.model, 4).image_size, CPU)
    on_cpu = stage(ingredients, base, tmp_path / "cpu", evaluator_on(base, CPU, cpu_sets))
    on_gpu = stage(ingredients, base, tmp_path / "gpu", evaluator_on(base, cuda, cpu_sets))
    cpu_results, gpu_results = ({r.name: r for r in o.results} for o in (on_cpu, on_gpu))
    assert list(gpu_results) == list(cpu_results)
    for name, result in cpu_results.items():
        assert gpu_results[name].members == result.members, name
    for name in WEIGHTED:
        gpu_state, cpu_state = gpu_results[name].load_state(), cpu_results[name].load_state()
        assert all(torch.allclose(gpu_state[k], v, atol=1e-5) for k, v in cpu_state.items()), name
    cpu_table = {(r["method"], r["set"]): r["top1"] for r in on_cpu.table}
    gpu_table = {(r["method"], r["set"]): r["top1"] for r in on_gpu.table}
    assert gpu_table.keys() == cpu_table.keys()
    assert all(abs(gpu_table[k] - v) <= 1 / 96 for k, v in cpu_table.items()), (gpu_table, cpu_table)


def test_the_default_soup_stage_runs_on_the_gpu(cuda, soup_inputs, tmp_path):  # noqa: F811
    """As `--device auto` runs it on a GPU machine: sets decoded by nvJPEG onto the GPU, bf16 autocast."""
    _, base_dir, ingredients = soup_inputs
    outcome = stage(ingredients, base_from_checkpoint(base_dir, tmp_path), tmp_path / "gpu", device="auto",
                    methods=list(METHODS), learned_steps=3)
    assert outcome.scored[0].logits["heldout"].device.type == "cuda"  # evaluated on the GPU
    assert {r.name for r in outcome.results} == set(METHODS) - {"wiseft"} | {"wiseft_greedy", "wiseft_best"}
    assert outcome.table and all(0 <= row["top1"] <= 1 for row in outcome.table)
    uniform = next(r for r in outcome.results if r.name == "uniform")
    assert set(uniform.members) == {i.trial_id for i in ingredients}
