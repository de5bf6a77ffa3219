"""What one training run (`python -m trainers.run`) reads from its --config: a file of training keys, or a
whole sweep file (the one `python -m sweep.run --config` takes).

A sweep file is a training config plus sections only a sweep has. One run applies the file's `preset`
(its fixed training values), logs to the `mlflow` section's tracking URI, and leaves the other sections
aside: its hyper-parameters are the file's fixed values and the --set overrides, never the search space.
trainers/ never imports sweep/, so the sweep-only sections are known here by name only;
tests/trainers/test_run_sweep_file.py keeps the names equal to sweep.config.SweepConfig's sections.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainers.config import Section, TrainConfig, validate
from trainers.config_files import apply_overrides, parse_sets, read_config_file
from trainers.errors import UserError
from trainers.presets import PRESETS, merge
from trainers.tracking import MlflowConfig

SWEEP_ONLY = ("preset", "search", "resources", "storage_path", "mlflow", "soup", "anytime", "baselines")
USED = ("preset", "mlflow")  # the sweep-only keys one run reads; the others are left aside with a note
DEFAULT_EXPERIMENT = "soupsweep-runs"  # where runs go when the mlflow section names no experiment


class Tracking(Section):
    """The mlflow section alone, validated under its own name (errors say `mlflow.tracking_uri`)."""

    mlflow: MlflowConfig


@dataclass
class RunConfig:
    train: TrainConfig
    mlflow: MlflowConfig | None = None  # None: no tracking URI given, nothing is logged
    ignored: list[str] = field(default_factory=list)  # the sweep-only sections the file had, left aside

    @property
    def experiment(self) -> str:
        return (self.mlflow.experiment if self.mlflow else "") or DEFAULT_EXPERIMENT

    def note(self) -> str | None:
        """One line saying which sections of a sweep file this run leaves aside (None: none)."""
        if not self.ignored:
            return None
        return (f"note: one training run ignores the sweep-only sections {', '.join(self.ignored)} of this "
                "file; its hyper-parameters are the file's fixed values and --set (python -m sweep.run sweeps them)")


def load_run_config(path: str, sets: list[str], tracking_uri: str | None = None) -> RunConfig:
    """A file (training keys, or a sweep file) with `--set` overrides; `tracking_uri` (--tracking-uri) wins
    over the file's mlflow.tracking_uri. UserErrors name the file and the key."""
    overrides = parse_sets(sets)
    if tracking_uri is not None:
        overrides["mlflow.tracking_uri"] = tracking_uri
    tree = with_preset(apply_overrides(read_config_file(path), overrides), path)
    train = validate(TrainConfig, {k: v for k, v in tree.items() if k not in SWEEP_ONLY}, path, overrides)
    mlflow = validate(Tracking, {"mlflow": tree["mlflow"]}, path, overrides).mlflow if "mlflow" in tree else None
    return RunConfig(train, mlflow, [k for k in SWEEP_ONLY if k in tree and k not in USED])


def with_preset(tree: dict[str, Any], source: str) -> dict[str, Any]:
    """The tree merged over its preset, as a sweep merges it (sweep.config.SweepConfig), preset key dropped."""
    name = tree.pop("preset", None)
    if name is None:
        return tree
    if name not in PRESETS:
        raise UserError(f"{source}: preset: unknown preset {name!r}; use one of {', '.join(PRESETS)} or null")
    return merge(PRESETS[name], tree)
