"""Every soup and ensemble method, declared once: what it is, what it needs, what must run before it,
whether it runs by default, and its own typed parameters. A leaf: it imports nothing of soup/, so the
options, the stage and the pipeline can all ask it (and the method modules are imported only when a
method runs). Adding a method: docs/architecture.md, "Adding a soup method".
"""
from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainers.errors import UserError


class Kind(enum.Enum):
    REFERENCE = "reference"  # a model that exists without souping (the zero-shot model, the best trial)
    SOUP = "soup"  # one set of averaged weights: saved, registrable, a WiSE-FT target
    INTERPOLATION = "interpolation"  # weights between the zero-shot model and a soup (WiSE-FT)
    ENSEMBLE = "ensemble"  # averaged outputs of several models: costs one forward pass per member


class Params(BaseModel):
    """A method's own options: flat keys of the sweep config's `soup` section, named after the method."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GreedyParams(Params):
    greedy_repeats: int = Field(0, ge=0, description="extra greedy soups over random ingredient orders, "
                                "reported as a spread (0: none)")
    greedy_seed: int = Field(0, ge=0, description="seed of the random orders of greedy_repeats")


class LearnedParams(Params):
    learned_steps: int = Field(20, ge=1, description="learned soups: optimisation steps on held-out")
    learned_lr: float = Field(0.05, gt=0, description="learned soups: Adam learning rate of the mixing logits")


class WiseftParams(Params):
    wiseft_alphas: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
                                       description="WiSE-FT mixing coefficients α (0: zero-shot, 1: fine-tuned)")
    wiseft_targets: list[str] = Field(default_factory=lambda: ["greedy", "best"],
                                      description="what WiSE-FT interpolates toward from the zero-shot model")

    @field_validator("wiseft_alphas")
    @classmethod
    def _alphas(cls, alphas: list[float]) -> list[float]:
        if not alphas or any(not 0 <= a <= 1 for a in alphas):
            raise ValueError(f"give at least one α, each in [0, 1] (got {alphas})")
        return sorted(set(alphas))

    @field_validator("wiseft_targets")
    @classmethod
    def _targets(cls, targets: list[str]) -> list[str]:
        allowed = ["best", *SOUP_METHODS]
        if not targets or any(t not in allowed for t in targets):
            raise ValueError(f"WiSE-FT targets {targets} must be among {allowed}")
        return targets


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the name users choose it by (--methods, soup.methods) and its rows are reported under
    kind: Kind
    run: str  # "module:function" (in soup.methods); the function takes (SelectionPool, SoupContext)
    default: bool = True  # runs when no methods are chosen (the costly ones are opt-in)
    needs_base: bool = False  # reads the shared initialisation (dropped without --base unless asked for)
    after: tuple[str | Kind, ...] = ()  # methods (or every method of a kind) whose results it may read
    params: type[Params] | None = None

    def function(self) -> Callable:
        """The method's function, imported when it runs (a module without a dot is one of soup.methods)."""
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module if "." in module else f"soup.methods.{module}"), attr)


# The registry, in the order methods run and are reported (a method after those it reads).
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in [
    MethodSpec("zeroshot", Kind.REFERENCE, "reference:zeroshot", needs_base=True),
    MethodSpec("best", Kind.REFERENCE, "reference:best_single"),
    MethodSpec("uniform", Kind.SOUP, "uniform:uniform_soup"),
    MethodSpec("greedy", Kind.SOUP, "greedy:greedy_soup", params=GreedyParams),
    MethodSpec("learned", Kind.SOUP, "learned:learned_soup", default=False, params=LearnedParams),
    MethodSpec("learned_layerwise", Kind.SOUP, "learned:learned_layerwise_soup", default=False,
               params=LearnedParams),
    MethodSpec("model_stock", Kind.SOUP, "model_stock:model_stock", needs_base=True),
    MethodSpec("wiseft", Kind.INTERPOLATION, "wiseft:wiseft", needs_base=True, after=(Kind.SOUP,),
               params=WiseftParams),  # after every soup: any of them may be a target
    MethodSpec("ensemble", Kind.ENSEMBLE, "ensemble:ensemble"),
    MethodSpec("greedy_ensemble", Kind.ENSEMBLE, "ensemble:greedy_ensemble"),
]}
DEFAULT_METHODS = [name for name, spec in METHODS.items() if spec.default]
# Methods whose result is one set of weights (saved as a checkpoint, registrable, WiSE-FT targets).
SOUP_METHODS = [name for name, spec in METHODS.items() if spec.kind is Kind.SOUP]
PARAMS: list[type[Params]] = list(dict.fromkeys(s.params for s in METHODS.values() if s.params))
NEEDS_BASE = {name for name, spec in METHODS.items() if spec.needs_base}


def order_problems(methods: dict[str, MethodSpec]) -> list[str]:
    """The stage runs methods in registry order: a method listed before one it reads is a mistake
    (tests/soup/test_selection.py checks that there is none)."""
    problems = []
    for position, (name, spec) in enumerate(methods.items()):
        later = list(methods.values())[position + 1:]
        for dep in spec.after:
            problems += [f"{name} reads {other.name}, declared after it" for other in later
                         if dep in (other.name, other.kind)]
    return problems



def unknown_methods(names: list[str]) -> str | None:
    """What is wrong with a list of soup method names (unknown ones, or none), if anything."""
    unknown = [n for n in names if n not in METHODS]
    return f"unknown soup methods {unknown or 'empty list'}; choose from {list(METHODS)}" if unknown or not names \
        else None


def parse_methods(spec: str | list[str]) -> list[str]:
    """'greedy,uniform' or a list -> validated method names, in registry order."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if isinstance(spec, str) else list(spec)
    if problem := unknown_methods(names):
        raise UserError(problem)
    return [n for n in METHODS if n in names]
