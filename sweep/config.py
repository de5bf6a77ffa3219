"""SweepConfig: a TrainConfig (the values every trial starts from) plus the sections only a sweep has.

So one YAML file holds both, and `--set optim.lr=1e-5` means the same key as `optim.lr` in the
search space and in every trial's meta.json.
"""
from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from soup.methods.options import SoupOptions
from trainers.config import Section, TrainConfig, allowed_keys, fixes_shared_init, flatten
from trainers.presets import PRESETS, merge
from trainers.tracking import MlflowConfig
from trainers.uris import absolute


class Domain(Section):
    """One search dimension: exactly one of the keys."""

    loguniform: tuple[float, float] | None = Field(None, description="[low, high], sampled log-uniformly; low > 0")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], sampled uniformly")
    randint: tuple[int, int] | None = Field(None, description="[low, high], integers, both included")
    choice: list[Any] | None = Field(None, description="a list of values, one picked uniformly")
    off_or_uniform: tuple[float, float] | None = Field(
        None, description="[low, high]: 0 with probability 1/2, else uniform (the model-soups recipe)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Domain":
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {given or 'none'})")
        low_high = self.loguniform or self.uniform or self.randint or self.off_or_uniform
        if low_high and low_high[0] > low_high[1]:
            raise ValueError(f"low {low_high[0]} is above high {low_high[1]}")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    def extremes(self) -> list[Any]:
        """Values that every sample lies between (or among): each is validated as a config value."""
        if self.choice is not None:
            return list(self.choice)
        if self.off_or_uniform:
            return [0.0, *self.off_or_uniform]
        return list(self.loguniform or self.uniform or self.randint)


KINDS = ("loguniform", "uniform", "randint", "choice", "off_or_uniform")


DEFAULT_SPACE = {
    "optim.lr": Domain(loguniform=(1e-3, 4e-3)),
    "optim.weight_decay": Domain(loguniform=(1e-3, 0.2)),
    "optim.label_smoothing": Domain(uniform=(0.0, 0.1)),
    "aug.mixup_alpha": Domain(choice=[0.0, 0.2]),
    "aug.min_scale": Domain(uniform=(0.7, 1.0)),
    "optim.epochs": Domain(randint=(8, 12)),
    "seed": Domain(randint=(0, 10_000)),
}


class AshaConfig(Section):
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="keep the top 1/reduction_factor at each rung")


class SearchConfig(Section):
    algorithm: Literal["random", "optuna", "grid"] = Field(
        "random", description="random search, Optuna TPE, or grid (every domain a choice)")
    num_samples: int = Field(4, ge=1, description="number of trials (grid: repeats of the whole grid)")
    seed: int = Field(0, description="seed of the search algorithm: the same seed proposes the same trials")
    space: dict[str, Domain] = Field(default_factory=lambda: dict(DEFAULT_SPACE),
                                     description="dotted training-config key -> domain")
    max_concurrent_trials: int | None = Field(None, ge=1, description="null: as many as the cluster fits")
    asha: AshaConfig | None = Field(None, description="ASHA early stopping on val/top1 per epoch; null: off")
    time_budget_s: float | None = Field(None, gt=0, description="stop the search after this many seconds")
    objective: Literal["val_top1", "soup_gain"] = Field(
        "val_top1", description="what the search algorithm maximises: each trial's own val/top1, or "
        "soup_gain, the rise in the anytime soup's held-out accuracy the trial brought (0 if not kept)")
    reuse_actors: bool | None = Field(None, description="start a trial in the process of one that ended (Tune's "
                                      "reuse_actors: no process start, no imports); null: on unless search.asha "
                                      "is set")

    @model_validator(mode="after")
    def _reuse_needs_whole_trials(self) -> "SearchConfig":
        # Tune can only reuse the process of a trial whose function returned; one that ASHA stopped is
        # still inside TorchTrainer.fit, the reset fails and Tune fails the next trial.
        if self.reuse_actors and self.asha is not None:
            raise ValueError("search.reuse_actors: true does not work with search.asha (Tune cannot reuse the "
                             "process of a trial stopped early); set it to null or false")
        return self

    def reuses_actors(self) -> bool:
        return self.asha is None if self.reuse_actors is None else self.reuse_actors

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> "SearchConfig":
        if self.algorithm == "grid":
            other = [k for k, d in self.space.items() if d.choice is None]
            if other:
                raise ValueError(f"search.algorithm grid needs a choice domain for every key; not for {other}")
        return self


class AnytimeConfig(Section):
    enabled: bool = Field(True, description="offer each trial that ran all its epochs to a greedy soup that "
                          "grows during the sweep (one held-out pass per trial); the parent run shows it")
    gpus: float = Field(0, ge=0, description="GPUs reserved for the anytime soup's evaluator (fractions "
                        "allowed, e.g. 0.25); 0 evaluates on CPU")
    stop_after: int | None = Field(None, ge=1, description="end the sweep when the soup's held-out accuracy "
                                   "has not improved for this many finished trials; null: off")


class BaselinesConfig(Section):
    enabled: bool = Field(True, description="compute the training-free baselines (zero-shot prompt ensemble, "
                          "Tip-Adapter) once when the sweep starts and show them in the soup report")
    tip_shots: int | None = Field(16, ge=1, description="Tip-Adapter's cache: at most this many training images "
                                  "per class (seeded); null: every training image")


class ResourcesConfig(Section):
    workers: int = Field(2, ge=1, description="DDP workers per trial (Ray Train workers)")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; 0 trains on CPU with gloo")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (fractions allowed)")
    driver_cpus: float = Field(0.5, gt=0, description="CPUs for each trial's driver (the Tune function)")
    max_failures: int = Field(1, ge=0, description="worker-group restarts per trial, resuming from its checkpoint")
    storage_patience_s: float = Field(600, ge=0, description="how long a trial, and the driver, wait for "
                                      "storage that cannot be written, retrying with back-off")

    def per_trial(self) -> dict[str, float]:
        return {"CPU": self.driver_cpus + self.workers * self.cpus_per_worker,
                "GPU": self.workers * self.gpus_per_worker}


class SoupSection(SoupOptions):
    """The soup stage's options (soup.methods.options.SoupOptions): `python -m soup.greedy` validates its flags
    with the same model, so the section and the flags cannot drift apart."""


class SweepConfig(TrainConfig):
    preset: Literal["model-soups", "wiseft"] | None = Field(
        None, description="start from a preset (merged under this config's own keys)")
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    storage_path: str = Field("soupsweep-results", validate_default=True,  # the default made absolute too
                              description="Ray storage: local/NFS path, s3:// or gs://")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    soup: SoupSection = Field(default_factory=SoupSection)
    anytime: AnytimeConfig = Field(default_factory=AnytimeConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return merge(PRESETS[data["preset"]], data)
        return data

    @field_validator("storage_path")
    @classmethod
    def _storage_absolute(cls, path: str) -> str:
        return absolute(path)

    @model_validator(mode="after")
    def _anytime_features_need_it(self) -> "SweepConfig":
        if not self.anytime.enabled:
            if self.search.objective == "soup_gain":
                raise ValueError("search.objective soup_gain needs the anytime soup: set anytime.enabled: true")
            if self.anytime.stop_after:
                raise ValueError("anytime.stop_after needs the anytime soup: set anytime.enabled: true")
        return self

    @model_validator(mode="after")
    def _space_keys_are_training_keys(self) -> "SweepConfig":
        train = self.train_config()
        valid = set(train.to_flat())
        for key, domain in self.search.space.items():
            if key not in valid:
                raise ValueError(f"search.space: {key!r} is not a training config key; "
                                 f"valid keys: {', '.join(sorted(valid))}")
            if fixes_shared_init(key):
                raise ValueError(f"search.space: {key!r} fixes the initialisation every trial shares (soups "
                                 f"need one); set it once at the top level, or run one sweep per value")
            for value in domain.extremes():
                try:
                    train.with_overrides({key: value})
                except ValueError as err:  # pydantic's ValidationError is a ValueError
                    first = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
                    raise ValueError(f"search.space.{key}: value {value!r} is invalid: {first}") from None
        return self

    def train_config(self) -> TrainConfig:
        """The base training config: this config without the sweep-only sections."""
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))

    def experiment_name(self) -> str:
        return self.mlflow.experiment or f"soupsweep-{time.strftime('%Y%m%d-%H%M%S')}"

    def warnings(self) -> list[str]:
        """What a user should know before the sweep runs (printed, one line each; nothing is refused)."""
        if self.model.pretrained:
            return []
        found = ["model.pretrained is null: the zero-shot row, WiSE-FT and Tip-Adapter use a randomly "
                 "initialised CLIP, and fine-tuning starts from it (set model.pretrained, e.g. laion2b_s34b_b79k)"]
        if self.preset:
            found.append(f"preset {self.preset}: its learning rates suit pretrained CLIP and train little from "
                         "random weights; set model.pretrained or search larger optim.lr")
        return found

    def to_params(self) -> dict[str, Any]:
        """Flat params for the sweep's MLflow run (the search space as one string per key)."""
        flat = flatten(self.model_dump(mode="json", exclude={"search"}))
        flat.update({f"search.{k}": v for k, v in self.search.model_dump(mode="json", exclude={"space"}).items()})
        flat.update({f"search.space.{k}": json.dumps(d.model_dump(exclude_none=True)) for k, d in self.search.space.items()})
        return flat


__all__ = ["SweepConfig", "Domain", "allowed_keys"]
