"""Nothing silently corrupt enters a soup: a changed checkpoint is caught by its sha256, weights far
from the base by the weight screen; and no trial counts twice (replayed offers, duplicated members)."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct

import pytest
import torch

from soup.methods.context import SoupContext
from soup.methods.greedy import greedy_soup
from soup.inputs.manifest import FINISHED, Ingredient
from soup.methods.options import SoupOptions
from soup.inputs.screening import outliers
from soup.inputs.base import base_from_checkpoint
from soup.make import make_soups
from soup.inputs.tensorfile import TensorFile
from tests.soup.conftest import run_stage
from tests.soup.test_methods import SCORES, ScriptedEvaluator, one_hot, scripted_pool
from trainers.baselines import BASELINES_JSON, training_free_baselines
from trainers.base import write_base_checkpoint
from trainers.checkpoint import DIGESTS, META, WEIGHTS
from trainers.errors import UserError


def damaged_copy(ingredient: Ingredient, target, bits: list[int], count: int = 1) -> Ingredient:
    """A copy of an ingredient's checkpoint with `bits` flipped in `count` weights of head.weight (those
    in [0.01, 0.5), where bit 30, the exponent's highest, makes a large finite value: 0.045 -> 1.5e37),
    in the bytes of its model.safetensors."""
    shutil.copytree(ingredient.checkpoint, target)
    file = TensorFile(target / WEIGHTS)
    values = file.get("head.weight").flatten()
    in_range = ((values.abs() >= 0.01) & (values.abs() < 0.5)).nonzero().flatten().tolist()
    chosen = in_range[:count] if 30 in bits else list(range(count))  # low-order bits: any weight
    start = file.data_start + file.entries["head.weight"]["data_offsets"][0]
    data = bytearray((target / WEIGHTS).read_bytes())
    for i in chosen:
        (word,) = struct.unpack_from("<I", data, start + 4 * i)
        for bit in bits:
            word ^= 1 << bit
        struct.pack_into("<I", data, start + 4 * i, word)
    (target / WEIGHTS).write_bytes(bytes(data))
    return Ingredient(f"{ingredient.trial_id}-damaged", FINISHED, str(target), ingredient.base_checksum)


def recompute_digest(checkpoint) -> None:
    """What a checkpoint corrupted before its digest was computed looks like (e.g. in memory)."""
    meta = json.loads((checkpoint / META).read_text())
    meta[DIGESTS][WEIGHTS] = hashlib.sha256((checkpoint / WEIGHTS).read_bytes()).hexdigest()
    (checkpoint / META).write_text(json.dumps(meta))


def test_a_flipped_exponent_bit_is_caught_by_the_digest_and_named(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    damaged = damaged_copy(ingredients[0], tmp_path / "flipped", [30])
    flipped = TensorFile(tmp_path / "flipped" / WEIGHTS).get("head.weight")
    assert flipped.isfinite().all() and flipped.abs().max() > 1e30
    outcome = run_stage([damaged, *ingredients[1:]], base_dir, tmp_path / "work", methods=["uniform"])
    reason = outcome.skipped[damaged.trial_id]
    assert reason.startswith("changed checkpoint:") and "changed after it was written" in reason
    assert str(tmp_path / "flipped" / WEIGHTS) in reason
    assert outcome.results[0].members == [i.trial_id for i in ingredients[1:]]


def test_low_order_bit_flips_are_caught_by_the_digest_only(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    damaged = damaged_copy(ingredients[1], tmp_path / "low", [0, 1], count=8)  # values change by ~1e-7
    outcome = run_stage([ingredients[0], damaged, ingredients[2]], base_dir, tmp_path / "work", methods=["uniform"])
    assert "changed after it was written" in outcome.skipped[damaged.trial_id]
    recompute_digest(tmp_path / "low")  # without the digest nothing could tell
    outcome = run_stage([ingredients[0], damaged, ingredients[2]], base_dir, tmp_path / "work2", methods=["uniform"])
    assert outcome.skipped == {}


def test_the_weight_screen_catches_what_the_digest_cannot_and_reports_the_z_score(soup_inputs, tmp_path):
    _, base_dir, ingredients = soup_inputs
    damaged = damaged_copy(ingredients[0], tmp_path / "flipped", [30])
    recompute_digest(tmp_path / "flipped")
    rows = [damaged, *ingredients[1:]]
    outcome = run_stage(rows, base_dir, tmp_path / "work", methods=["uniform"])
    reason = outcome.skipped[damaged.trial_id]
    assert reason.startswith("weights far from the base") and "soup.outlier_z 3.5" in reason
    z = float(reason.split("robust z-score ")[1].split()[0])
    assert z > 30  # a flipped exponent moves the distance by decades; the others' differ by their lr
    assert outcome.results[0].members == [i.trial_id for i in ingredients[1:]]
    # with fewer than three ingredients there is no spread to judge against: it is not screened
    two = run_stage(rows[:2], base_dir, tmp_path / "two", methods=["uniform"], outlier_z=3.5)
    assert two.skipped == {} and len(two.results[0].members) == 2
    off = run_stage(rows, base_dir, tmp_path / "off", methods=["uniform"], outlier_z=0)
    assert off.skipped == {}


def test_the_robust_z_score_of_log_distances():
    same_sweep = {"a": 1.0, "b": 1.02, "c": 20.0, "d": 0.05}  # learning rates 20x apart: all kept
    assert outliers(same_sweep, 3.5) == {}
    flagged = outliers({**same_sweep, "e": 1.5e37}, 3.5)
    assert list(flagged) == ["e"] and "robust z-score 19.4" in flagged["e"]  # 0.6745 · 37.17 / 1.29
    assert outliers({"a": 1.0, "e": 1.5e37}, 3.5) == {}  # fewer than three: nothing judged
    assert outliers({"a": 0.0, "b": 1.0, "c": 1.1}, 3.5) == {}  # the base itself is no outlier
    # one trial trained while the others barely moved (learning rates 1e6x apart): far above them in
    # z, but closer to the base than the base's own norm, as fine-tuning is: kept
    barely = {"trained": 1.0, "a": 1e-6, "b": 1e-6, "c": 2e-6}
    assert list(outliers(barely, 3.5)) == ["trained"] and outliers(barely, 3.5, base_norm=10.0) == {}
    assert list(outliers({**barely, "e": 1.5e37}, 3.5, base_norm=10.0)) == ["e"]


def test_the_greedy_soup_never_weights_a_duplicated_member_twice(soup_inputs, tmp_path):
    """A start whose members repeat a trial (an anytime soup that was offered it twice) is not reused."""
    _, base_dir, ingredients = soup_inputs
    one = ingredients[0].trial_id
    trace = [{"step": s, "trial_id": t, "accepted": True} for s, t in enumerate([one, one])]
    trace += [{"step": 2 + s, "trial_id": i.trial_id, "accepted": False} for s, i in enumerate(ingredients[1:])]
    start = {"members": [one, one], "trace": trace}
    with_start = make_soups(ingredients, base_from_checkpoint(base_dir, tmp_path), SoupOptions(methods=["greedy"]),
                            tmp_path, greedy_start=start)
    (tmp_path / "fresh").mkdir()
    fresh = make_soups(ingredients, base_from_checkpoint(base_dir, tmp_path / "fresh"),
                       SoupOptions(methods=["greedy"]), tmp_path / "fresh")
    ours, theirs = with_start.results[0], fresh.results[0]
    assert ours.members == theirs.members and len(set(ours.members)) == len(ours.members)
    for key, value in theirs.load_state().items():
        assert torch.equal(ours.load_state()[key], value), key
    # an ingredient listed twice is one ingredient
    twice = run_stage([*ingredients, ingredients[0]], base_dir, tmp_path / "twice", methods=["greedy", "uniform"])
    for result in twice.results:
        assert sorted(result.members) == sorted(set(result.members))
    assert [s.trial_id for s in twice.scored] == [i.trial_id for i in ingredients]


@pytest.mark.parametrize("tie_rule", [">=", ">"])
def test_the_greedy_walk_offered_a_trial_twice_counts_it_once(tie_rule):
    ctx = SoupContext(ScriptedEvaluator(SCORES), SoupOptions(tie_rule=tie_rule), load=one_hot)
    pool = scripted_pool()
    once, twice = greedy_soup(pool, ctx), greedy_soup([*pool, pool[3], pool[1]], ctx)
    assert twice.members == once.members and twice.trace == once.trace


def test_a_changed_base_is_refused_and_changed_baselines_are_left_out(soup_inputs, tmp_path):
    cfg, _, _ = soup_inputs
    base = tmp_path / "base"  # written as the sweep writes it: the baselines inside, digested with the rest
    write_base_checkpoint(cfg, base, extras=training_free_baselines(cfg, torch.device("cpu"), shots=2).save)
    assert base_from_checkpoint(str(base), tmp_path).baselines is not None

    summary = json.loads((base / BASELINES_JSON).read_text())
    summary["metrics"]["zeroshot"]["test"]["top1"] = 0.99  # an edited number would be shown beside the soups
    (base / BASELINES_JSON).write_text(json.dumps(summary))
    assert base_from_checkpoint(str(base), tmp_path).baselines is None

    weights = bytearray((base / WEIGHTS).read_bytes())
    weights[-1] ^= 1
    (base / WEIGHTS).write_bytes(bytes(weights))  # WiSE-FT would mix it into every interpolation
    with pytest.raises(UserError, match=f"{WEIGHTS} changed after it was written"):
        base_from_checkpoint(str(base), tmp_path)
