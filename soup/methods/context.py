"""What every soup method gets (SoupContext) and gives back (MethodResult)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from soup.scoring.evaluation import Scored
from soup.methods.options import SoupOptions
from soup.inputs.statedict import normalise_keys
from soup.inputs.tensorfile import TensorFile, read_tensors
from trainers.checkpoint import WEIGHTS, save_checkpoint
from trainers.errors import UserError


# What a method is given to choose from: the scored ingredients, their logits Sealed (held-out only).
SelectionPool = list[Scored]


def load_state(scored: Scored) -> dict[str, torch.Tensor]:
    """Weights of a scored ingredient, read again: soups stream checkpoints, one in memory at a time."""
    return normalise_keys(read_tensors(scored.weights))


@dataclass
class MethodResult:
    name: str
    logits: Mapping[str, torch.Tensor]  # per evaluation set: Sealed until the report opens it
    cost: int  # forward passes per image at inference
    members: list[str]  # trial ids, in the order they were added
    weights: Path | None = None  # the soup's checkpoint directory, for methods that make one model
    trace: list[dict] = field(default_factory=list)  # one row per step, logged as <name>_trace.json
    tables: dict[str, list[dict]] = field(default_factory=dict)  # more rows, logged as <name>_<key>.json
    metrics: dict[str, float] = field(default_factory=dict)  # logged as <name>/<key>

    def load_state(self) -> dict[str, torch.Tensor]:
        if self.weights is None:
            raise ValueError(f"{self.name} made no weights (an ensemble, or run without a spool directory)")
        return read_tensors(self.weights / WEIGHTS)


@dataclass
class SoupContext:
    """The evaluator and everything else a method may need; methods record their results in `done`."""

    evaluator: Any  # soup.scoring.evaluation.Evaluator, or a scripted stand-in with the same two calls
    options: SoupOptions = field(default_factory=SoupOptions)
    base_file: Path | None = None  # safetensors of the shared initialisation (zero-shot model)
    load: Callable[[Scored], dict[str, torch.Tensor]] = load_state
    spool_dir: Path | None = None  # where soups are written as they are made; None: not kept
    soup_meta: dict[str, Any] = field(default_factory=dict)  # config, classes, base checksum of every soup
    greedy_start: dict | None = None  # {members, trace} of the sweep's anytime soup: the greedy soup so far
    done: dict[str, MethodResult] = field(default_factory=dict)

    @property
    def tie_rule(self) -> str:
        return self.options.tie_rule

    def base(self, method: str) -> TensorFile:
        """The shared initialisation, read tensor by tensor; methods that need it say so when it is missing."""
        if self.base_file is None:
            raise UserError(f"soup method {method} needs the shared initialisation (the zero-shot model); "
                            "pass --base <checkpoint dir or weights file> or drop the method")
        return TensorFile(self.base_file)

    def save(self, name: str, members: list[str], lineage: dict[str, str], **meta: Any) -> Path | None:
        """Write the weights now in the evaluator's model as this soup's checkpoint, so that the soup
        does not stay in memory while later methods run."""
        if self.spool_dir is None:
            return None
        full = {**self.soup_meta, "method": name, "members": members, "lineage": lineage,
                "trial_id": f"soup:{name}", **meta}
        return save_checkpoint(self.spool_dir / name.replace(":", "-"), self.evaluator.state_dict(), full)


def lineage(pool: list[Scored], members: list[str]) -> dict[str, str]:
    """trial id -> MLflow run id of each member: which runs a soup was made from."""
    runs = {s.trial_id: s.ingredient.mlflow_run_id for s in pool}
    return {m: runs.get(m, "") for m in members}
