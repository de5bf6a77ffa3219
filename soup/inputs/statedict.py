"""State-dict math for soups: key normalisation, compatibility checks, a streaming running sum,
and lazy state dicts whose tensors are computed one at a time when they are copied into a model."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator

import torch

PREFIXES = ("module.", "_orig_mod.")
# BatchNorm's step counter: it differs between ingredients trained for different numbers of steps
# without making them incompatible (it is no weight), so it is copied from the first ingredient
# instead of being required equal like every other integer buffer.
COUNTERS = ("num_batches_tracked",)


class IncompatibleIngredient(ValueError):
    """An ingredient whose keys, shapes or dtypes differ from the others; the message names them."""


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's `module.` and torch.compile's `_orig_mod.` prefixes (anywhere in the key)."""
    def clean(key: str) -> str:
        for prefix in PREFIXES:
            key = key.replace(prefix, "")
        return key

    return {clean(key): value for key, value in state.items()}


def check_compatible(reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
    """Raise IncompatibleIngredient naming every missing/extra key and shape/dtype mismatch."""
    problems = [f"missing {k}" for k in sorted(reference.keys() - state.keys())]
    problems += [f"unexpected {k}" for k in sorted(state.keys() - reference.keys())]
    for key in sorted(reference.keys() & state.keys()):
        ref, got = reference[key], state[key]
        if ref.shape != got.shape:
            problems.append(f"{key} shape {tuple(got.shape)} != {tuple(ref.shape)}")
        elif ref.dtype != got.dtype:
            problems.append(f"{key} dtype {got.dtype} != {ref.dtype}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise IncompatibleIngredient(shown)


class RunningSum:
    """Sum of state dicts, one added at a time: floats summed in fp32, other tensors checked equal.

    Memory is one state dict whatever the number of ingredients; `mean()` gives the uniform average,
    and `mean_with(candidate)` the average a greedy step would test, without changing the sum.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)  # the evaluation device: on a GPU the sum costs no host memory
        self.total: dict[str, torch.Tensor] = {}
        self.reference: dict[str, torch.Tensor] = {}  # shapes and dtypes only (meta tensors)
        self.count = 0

    def add(self, state: Mapping[str, torch.Tensor]) -> None:
        if not self.count:
            self.reference = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
            self.total = {k: v.to(self.device, torch.float32, copy=True) if v.is_floating_point()
                          else v.to(self.device, copy=True) for k, v in state.items()}  # updated in place
        else:
            check_compatible(self.reference, state)
            for key, value in state.items():
                self._accumulate(key, value)
        self.count += 1

    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        if value.is_floating_point():
            self.total[key] += value.to(self.total[key].device, torch.float32)
        elif not key.endswith(COUNTERS) and not torch.equal(self.total[key], value.to(self.total[key].device)):
            raise IncompatibleIngredient(f"non-float tensor {key} differs between ingredients")

    def mean(self) -> dict[str, torch.Tensor]:
        """The average, materialised (one more state dict in memory)."""
        return dict(self.mean_view())

    def mean_view(self) -> "LazyState":
        """The average, computed tensor by tensor as it is read: loading it into a model costs no copy."""
        return LazyState(self.total.keys(), lambda key: self._divided(key, self.total[key], self.count))

    def mean_with(self, candidate: Mapping[str, torch.Tensor]) -> "LazyState":
        """The average a greedy step tests, lazily, without changing the sum."""
        check_compatible(self.reference, candidate)

        def value(key: str) -> torch.Tensor:
            total = self.total[key]
            if total.is_floating_point():
                total = total + candidate[key].to(total.device, torch.float32)
            return self._divided(key, total, self.count + 1)

        return LazyState(self.total.keys(), value)

    def _divided(self, key: str, summed: torch.Tensor, count: int) -> torch.Tensor:
        return (summed / count).to(self.reference[key].dtype) if summed.is_floating_point() else summed.clone()


class LazyState(Mapping):
    """A read-only state dict whose values are computed on access: `Evaluator.load` copies them into
    the model one at a time, so an average or an interpolation never exists whole beside the model."""

    def __init__(self, keys, value: Callable[[str], torch.Tensor]):
        self._keys = list(keys)
        self._known = set(self._keys)
        self._value = value

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._known:
            raise KeyError(key)
        return self._value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first floating tensor holding nan or inf (a diverged run), else None."""
    for key in state:
        value = state[key]
        if value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None
