"""The soup stage's options: one typed model, used as the sweep config's `soup` section and built by
`python -m soup.greedy` from its flags, so both spell and validate every option the same way."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from soup.screening import DEFAULT_OUTLIER_Z
from trainers.config import Section

# What runs when nothing is chosen: every method that costs at most a few held-out passes per
# ingredient. The learned soups optimise on held-out for many steps, so they are opt-in.
DEFAULT_METHODS = ["zeroshot", "best", "uniform", "greedy", "model_stock", "wiseft", "ensemble", "greedy_ensemble"]
# Methods whose result is a single set of weights (saved as a checkpoint, registrable, WiSE-FT targets).
SOUP_METHODS = ["uniform", "greedy", "model_stock", "learned", "learned_layerwise"]
WISEFT_ALPHAS = [round(0.1 * i, 1) for i in range(11)]


class SoupOptions(Section):
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description="soup and ensemble methods to run, by registered name")
    tie_rule: Literal[">=", ">"] = Field(">=", description="greedy soup: keep ties (>=, the paper's recipe) or not (>)")
    device: str = Field("auto", description="where the soup stage evaluates: auto, cpu, cuda, cuda:N")
    eval_workers: int | Literal["auto"] = Field(
        "auto", description="Ray workers that evaluate the ingredients in parallel (0: in this process; "
        "auto: one per free GPU when Ray is running and at least two are free, else 0; N: N workers, "
        "one GPU each when the cluster has GPUs, else CPU workers)")
    greedy_repeats: int = Field(0, ge=0, description="extra greedy soups over random ingredient orders, "
                                "reported as a spread (0: none)")
    greedy_seed: int = Field(0, ge=0, description="seed of the random orders of greedy_repeats")
    wiseft_alphas: list[float] = Field(default_factory=lambda: list(WISEFT_ALPHAS),
                                       description="WiSE-FT mixing coefficients α (0: zero-shot, 1: fine-tuned)")
    wiseft_targets: list[str] = Field(default_factory=lambda: ["greedy", "best"],
                                      description="what WiSE-FT interpolates toward from the zero-shot model")
    learned_steps: int = Field(20, ge=1, description="learned soups: optimisation steps on held-out")
    learned_lr: float = Field(0.05, gt=0, description="learned soups: Adam learning rate of the mixing logits")
    bn_images: int = Field(1024, ge=1, description="training images used to recompute BatchNorm statistics")
    init_tolerance: float = Field(0.5, gt=0, description="weights without meta.json: largest relative distance "
                                  "||w - w_base|| / ||w_base|| (image tower, head) still counted as the same init")
    outlier_z: float = Field(DEFAULT_OUTLIER_Z, ge=0, description="weight screen: leave out an ingredient whose "
                             "robust z-score of log10 ||w - w_base|| against the others' exceeds this (0: off; "
                             "needs the base and at least 3 ingredients)")
    register_as: str = Field("", description="register this soup in the MLflow model registry under this name "
                             "(empty: do not register)")
    register_method: str = Field("greedy", description="which soup register_as registers")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        from soup.methods import METHODS  # late: the registry's modules import this one

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown soup methods {unknown or 'empty list'}; choose from {list(METHODS)}")
        return methods

    @field_validator("eval_workers")
    @classmethod
    def _workers(cls, workers: int | str) -> int | str:
        if workers != "auto" and workers < 0:
            raise ValueError("give 0 (in this process), a number of Ray workers, or auto")
        return workers

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

    @model_validator(mode="after")
    def _registrable(self) -> "SoupOptions":
        if self.register_method not in SOUP_METHODS:
            raise ValueError(f"register_method {self.register_method!r}: only soups can be registered, "
                             f"one of {SOUP_METHODS}")
        return self

    def planned_methods(self) -> list[str]:
        """The methods to run, in registry order: the chosen ones plus the soups that WiSE-FT
        interpolates toward and the one to register (each computed once, all reported)."""
        from soup.methods import METHODS

        wanted = set(self.methods)
        if "wiseft" in wanted:
            wanted.update(t for t in self.wiseft_targets if t in METHODS)
        if self.register_as:
            wanted.add(self.register_method)
        return [name for name in METHODS if name in wanted]
