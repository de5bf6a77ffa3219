"""Logits on every evaluation set, of which selection may read only the held-out ones.

Soup methods choose members, α and mixing weights; if they could read test or shift logits they
could choose on what the report measures. Every logits that reaches a method is `Sealed`: indexing
it with "heldout" (or `.heldout`) gives the held-out logits, any other set raises `SelectionLeak`.
The report opens them with `unseal`, which only soup/outputs and soup/make.py import
(tests/test_architecture.py checks that the methods never do).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch

HELDOUT = "heldout"
# Keys of method table rows holding Sealed logits that the report turns into top-1 per set: as
# columns "<set>/top1" of the same row (wide), or as one row per set with "set" and "top1" (long).
SEALED_WIDE, SEALED_LONG = "sealed_logits", "sealed_logits_by_set"


class SelectionLeak(LookupError):
    """A method asked for logits of a set that only the report may read."""


class Sealed:
    """A read-only view of logits per evaluation set: only the held-out set can be read."""

    __slots__ = ("__logits",)

    def __init__(self, logits: dict[str, torch.Tensor]):
        self.__logits = dict(logits)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name != HELDOUT:
            raise SelectionLeak(f"selection may only use the heldout split, not {name!r}: test and shift "
                                "logits are read only where the report is built")
        return self.__logits[HELDOUT]

    @property
    def heldout(self) -> torch.Tensor:
        return self[HELDOUT]

    def __iter__(self) -> Iterator[str]:
        return iter(self.__logits)  # the set names: what a method may know about the others

    def keys(self) -> list[str]:
        return list(self.__logits)

    def __len__(self) -> int:
        return len(self.__logits)

    @staticmethod
    def mean(sealed: Iterable["Sealed"]) -> "Sealed":
        """The output ensemble: the mean of several models' logits on every set, still sealed."""
        opened = [s.__logits for s in sealed]
        return Sealed({name: torch.stack([o[name] for o in opened]).mean(0) for name in opened[0]})

    def _open(self) -> dict[str, torch.Tensor]:
        return dict(self.__logits)


def unseal(sealed: Sealed) -> dict[str, torch.Tensor]:
    """Every set's logits: for the report (soup/outputs, soup/make.py) only."""
    return sealed._open()


def mean_logits(logits: list) -> Mapping[str, torch.Tensor]:
    """The mean of several models' logits on every set (an output ensemble): sealed when they are."""
    if all(isinstance(x, Sealed) for x in logits):
        return Sealed.mean(logits)
    return {n: torch.stack([x[n] for x in logits]).mean(0) for n in logits[0]}
