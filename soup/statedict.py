"""State-dict math for soups: key normalisation, compatibility checks and a streaming running sum."""
from __future__ import annotations

import torch

PREFIXES = ("module.", "_orig_mod.")


class IncompatibleIngredient(ValueError):
    """An ingredient whose keys, shapes or dtypes differ from the others; the message names them."""


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's `module.` and torch.compile's `_orig_mod.` prefixes (anywhere in the key)."""
    def clean(key: str) -> str:
        for prefix in PREFIXES:
            key = key.replace(prefix, "")
        return key

    return {clean(key): value for key, value in state.items()}


def check_compatible(reference: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
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

    def __init__(self) -> None:
        self.total: dict[str, torch.Tensor] = {}
        self.reference: dict[str, torch.Tensor] = {}  # shapes and dtypes only (meta tensors)
        self.count = 0

    def add(self, state: dict[str, torch.Tensor]) -> None:
        if not self.count:
            self.reference = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
            self.total = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
                          for k, v in state.items()}  # copy: the sum is updated in place
        else:
            check_compatible(self.reference, state)
            for key, value in state.items():
                self._accumulate(key, value)
        self.count += 1

    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        if value.is_floating_point():
            self.total[key] += value.to(torch.float32)
        elif not torch.equal(self.total[key], value):
            raise IncompatibleIngredient(f"non-float tensor {key} differs between ingredients")

    def mean(self) -> dict[str, torch.Tensor]:
        return self._divided(self.total, self.count)

    def mean_with(self, candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        check_compatible(self.reference, candidate)
        summed = {k: (v + candidate[k].to(torch.float32)) if v.is_floating_point() else v
                  for k, v in self.total.items()}
        return self._divided(summed, self.count + 1)

    def _divided(self, summed: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
        return {k: (v / count).to(self.reference[k].dtype) if v.is_floating_point() else v.clone()
                for k, v in summed.items()}
