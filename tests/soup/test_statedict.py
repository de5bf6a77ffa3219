"""Golden tests of the state-dict math on hand-made state dicts."""
from __future__ import annotations

import pytest
import torch

from soup.inputs.statedict import IncompatibleIngredient, RunningSum, check_compatible, normalise_keys


def dyadic(seed: int, shape=(4, 3)) -> torch.Tensor:
    """Values k/8 with small k: sums and means of a few of them are exact in float32."""
    return torch.randint(-64, 64, shape, generator=torch.Generator().manual_seed(seed)).float() / 8


def states(n: int) -> list[dict[str, torch.Tensor]]:
    return [{"w": dyadic(i), "b": dyadic(100 + i, (3,)), "half": dyadic(200 + i, (2,)).half(),
             "num_batches_tracked": torch.tensor(5), "mask": torch.tensor([True, False]),
             "index": torch.tensor([0, 2, 1], dtype=torch.int32)} for i in range(n)]


def test_uniform_soup_is_exactly_the_elementwise_mean():
    ingredients = states(4)
    running = RunningSum()
    for state in ingredients:
        running.add(state)
    soup = running.mean()
    for key in ("w", "b", "half"):
        expected = torch.stack([s[key].double() for s in ingredients]).mean(0).to(ingredients[0][key].dtype)
        assert soup[key].dtype == ingredients[0][key].dtype
        assert torch.equal(soup[key], expected), key


def test_integer_and_bool_buffers_are_copied_not_averaged():
    running = RunningSum()
    for state in states(3):
        running.add(state)
    soup = running.mean()
    assert soup["num_batches_tracked"].dtype == torch.int64 and soup["num_batches_tracked"].item() == 5
    assert soup["mask"].tolist() == [True, False]


def test_integer_buffers_must_match():
    a, b = states(2)
    b["index"] = torch.tensor([0, 1, 2], dtype=torch.int32)
    running = RunningSum()
    running.add(a)
    with pytest.raises(IncompatibleIngredient, match="index differs"):
        running.add(b)


def test_batchnorm_step_counters_may_differ_and_come_from_the_first():
    a, b = states(2)
    b["num_batches_tracked"] = torch.tensor(9)  # trained for more steps: no reason to refuse it
    running = RunningSum()
    running.add(a)
    running.add(b)
    assert running.mean()["num_batches_tracked"].item() == 5
    assert running.mean()["index"].dtype == torch.int32 and running.mean()["index"].tolist() == [0, 2, 1]


def test_lazy_views_compute_the_same_average_tensor_by_tensor():
    a, b, c = states(3)
    running = RunningSum()
    running.add(a)
    running.add(b)
    view, preview = running.mean_view(), running.mean_with(c)
    assert set(view) == set(a) and len(view) == len(a)
    assert all(torch.equal(view[k], running.mean()[k]) for k in a)
    assert torch.equal(preview["half"], ((a["half"].float() + b["half"].float() + c["half"].float()) / 3).half())
    with pytest.raises(KeyError):
        view["nope"]


def test_mean_with_previews_without_changing_the_sum():
    a, b, c = states(3)
    running = RunningSum()
    running.add(a)
    running.add(b)
    preview = running.mean_with(c)
    assert torch.equal(preview["w"], (a["w"] + b["w"] + c["w"]) / 3)
    assert running.count == 2 and torch.equal(running.mean()["w"], (a["w"] + b["w"]) / 2)


def test_mismatches_are_reported_by_name():
    ref = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    bad = {"a": torch.zeros(4), "b": torch.zeros(3, dtype=torch.float16), "d": torch.zeros(1)}
    with pytest.raises(IncompatibleIngredient) as err:
        check_compatible(ref, bad)
    message = str(err.value)
    for part in ("missing c", "unexpected d", "a shape (4,) != (2,)", "b dtype torch.float16 != torch.float32"):
        assert part in message


def test_prefixes_are_normalised():
    state = {"module.visual.w": torch.zeros(1), "_orig_mod.head.b": torch.zeros(1), "module._orig_mod.x": torch.zeros(1)}
    assert set(normalise_keys(state)) == {"visual.w", "head.b", "x"}
