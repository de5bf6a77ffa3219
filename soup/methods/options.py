"""The soup stage's options: one typed model, used as the sweep config's `soup` section and built by
`python -m soup.greedy` from its flags, so both spell and validate every option the same way.

The stage's own options are declared here; each method's parameters are declared with the method
(soup.methods.spec) and joined in as flat keys (`greedy_repeats`, `wiseft_alphas`, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from soup.methods.spec import DEFAULT_METHODS, METHODS, PARAMS, SOUP_METHODS, unknown_methods
from soup.inputs.screening import DEFAULT_OUTLIER_Z
from trainers.config import Section
from trainers.errors import UserError


class StageOptions(Section):
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description="soup and ensemble methods to run, by registered name")
    tie_rule: Literal[">=", ">"] = Field(">=", description="greedy soup: keep ties (>=, the paper's recipe) or not (>)")
    device: str = Field("auto", description="where the soup stage evaluates: auto, cpu, cuda, cuda:N")
    eval_workers: int | Literal["auto"] = Field(
        "auto", description="Ray workers that evaluate the ingredients in parallel (0: in this process; "
        "auto: one per free GPU when Ray is running and at least two are free, else 0; N: N workers, "
        "one GPU each when the cluster has GPUs, else CPU workers)")
    bn_images: int = Field(1024, ge=1, description="training images used to recompute BatchNorm statistics")
    init_tolerance: float = Field(0.5, gt=0, description="weights without meta.json: largest relative distance "
                                  "||w - w_base|| / ||w_base|| (image tower, head) still counted as the same init")
    outlier_z: float = Field(DEFAULT_OUTLIER_Z, ge=0, description="weight screen: leave out an ingredient whose "
                             "robust z-score of log10 ||w - w_base|| against the others' exceeds this (0: off; "
                             "needs the base and at least 3 ingredients)")
    register_as: str = Field("", description="register this soup in the MLflow model registry under this name "
                             "(empty: do not register)")
    register_method: str = Field("greedy", description="which soup register_as registers and "
                                 "export_open_clip exports")
    export_open_clip: str = Field("", description="write that soup as a whole open_clip model (safetensors, "
                                  "config, class head) into this new directory (empty: no export)")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        if problem := unknown_methods(methods):
            raise ValueError(problem)
        return methods

    @field_validator("eval_workers")
    @classmethod
    def _workers(cls, workers: int | str) -> int | str:
        if workers != "auto" and workers < 0:
            raise ValueError("give 0 (in this process), a number of Ray workers, or auto")
        return workers

    @field_validator("export_open_clip")
    @classmethod
    def _new_directory(cls, directory: str) -> str:
        if directory:
            check_export_dir(directory)
        return directory

    @model_validator(mode="after")
    def _registrable(self) -> "StageOptions":
        if self.register_method not in SOUP_METHODS:
            raise ValueError(f"register_method {self.register_method!r}: only soups can be registered, "
                             f"one of {SOUP_METHODS}")
        return self

    def planned_methods(self) -> list[str]:
        """The methods to run, in registry order: the chosen ones plus the soups that WiSE-FT
        interpolates toward and the one to register (each computed once, all reported)."""
        wanted = set(self.methods)
        if "wiseft" in wanted:
            wanted.update(t for t in getattr(self, "wiseft_targets", []) if t in METHODS)
        if self.register_as or self.export_open_clip:
            wanted.add(self.register_method)
        return [name for name in METHODS if name in wanted]


class SoupOptions(*reversed(PARAMS), StageOptions):
    """The stage's options and every registered method's parameters (soup.methods.spec.PARAMS)."""


def check_export_dir(directory: str) -> None:
    """Before any soup is made: the export never replaces what is there."""
    path = Path(directory).expanduser()
    if path.exists():
        raise UserError(f"export_open_clip: {path} already exists; give a new directory (nothing is overwritten)")
    if not path.parent.is_dir():
        raise UserError(f"export_open_clip: the parent directory {path.parent} does not exist; create it first")
