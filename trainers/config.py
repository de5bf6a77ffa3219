"""TrainConfig: the one shape of a training configuration.

YAML files, Tune's flat dotted overrides ("optim.lr"), the worker payload, meta.json and MLflow
params are all serializations of this model; `tests/trainers/test_config.py` keeps them equal.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainers.config_files import apply_overrides, flatten  # noqa: F401 (imported from here too)
from trainers.errors import UserError
from trainers.uris import absolute

CompileBackend = Literal["inductor", "aot_eager", "eager"]  # what model.compile may name besides true/false
COMPILE_BACKENDS = get_args(CompileBackend)


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(
        "soupsweep-tiny-vit",
        description="open_clip architecture (e.g. ViT-B-32, ViT-B-16-SigLIP), a model config shipped in "
        "trainers/model_configs (e.g. soupsweep-tiny-vit), a path to an open_clip model config JSON, "
        "hf-hub:org/repo or local-dir:/path (docs/models.md).",
    )
    pretrained: str | None = Field(
        None,
        description="open_clip pretrained tag (e.g. laion2b_s34b_b79k, downloaded) or a local "
        "checkpoint file; null for random weights (hf-hub:/local-dir: names: the weights published there).",
    )
    templates: Literal["openai-80", "openai-7", "simple"] = Field(
        "openai-7", description="Shipped prompt templates averaged per class for the zero-shot head."
    )
    custom_templates: list[str] = Field(
        default_factory=list, description="Your own templates, each with one '{}' for the class name; "
        "used instead of `templates` when given.")
    class_names: dict[str, str] = Field(
        default_factory=dict, description="Data class name -> the name prompts use (e.g. n01440764 -> tench).")
    class_descriptions: dict[str, list[str]] = Field(
        default_factory=dict, description="Data class name -> extra prompts (whole sentences) for that class.")
    compile: bool | CompileBackend = Field(
        False, description="torch.compile the module the training step runs: true (inductor, torch's default "
        "backend), a backend name (aot_eager or eager: trace without generating code, quick on a CPU), or false.")
    freeze_batchnorm: bool = Field(
        False, description="Keep BatchNorm statistics and affine weights of the image tower fixed (conv towers).")

    @field_validator("compile", mode="before")
    @classmethod
    def _bool_or_backend(cls, value: Any) -> Any:
        # One clear message instead of pydantic's two (one per member of the union).
        if isinstance(value, bool) or value in COMPILE_BACKENDS:
            return value
        if value in ("true", "false"):  # a quoted boolean
            return value == "true"
        raise ValueError(f"use true (inductor), false or a torch.compile backend: {', '.join(COMPILE_BACKENDS)}")

    @field_validator("custom_templates")
    @classmethod
    def _one_placeholder(cls, templates: list[str]) -> list[str]:
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' for the class name: {bad[:3]}")
        return templates


class DataConfig(Section):
    train: str = Field("", description="Training split: a store directory of Parquet shards (local or URI) "
                       "or one Parquet file.")
    val: str = Field("", description="Split for per-trial validation: the metric the search optimises.")
    heldout: str = Field("", description="Split used only to select soup ingredients (a store directory or "
                         "Parquet file, like train).")
    test: str = Field("", description="Split for the in-distribution report.")
    shift: dict[str, str] = Field(
        default_factory=dict, description="Named distribution-shift sets: name -> split."
    )
    balanced_sampler: bool = Field(
        False, description="Draw training classes uniformly (then an image of the class), for imbalanced data.")

    def splits(self) -> dict[str, str]:
        """Every evaluation set by name: heldout, test and shift/<name>."""
        sets = {"val": self.val, "heldout": self.heldout, "test": self.test}
        sets.update({f"shift/{name}": path for name, path in self.shift.items()})
        return sets


class OptimConfig(Section):
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (not on biases and norms).")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps before the cosine decay.")
    epochs: int = Field(3, ge=1, description="Training epochs.")
    batch_size: int = Field(32, ge=1, description="Images per step per worker.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the targets.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; null for none.")
    accumulation_steps: int = Field(
        1, ge=1, description="Batches whose gradients are summed per optimizer step (effective batch: "
        "batch_size x accumulation_steps x workers).")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Exponential moving average of the weights with this decay per "
        "optimizer step; the average is evaluated and saved. null: off.")


class MethodConfig(Section):
    name: Literal["ft", "flyp", "carft", "lp"] = Field(
        "ft", description="ft: cross-entropy, whole image tower; flyp: contrastive image-prompt loss, both "
        "towers; carft: cross-entropy + KL to the zero-shot context distribution; lp: the head only.")
    init: Literal["zeroshot", "lp"] = Field(
        "zeroshot", description="The shared head init: zeroshot (from prompts) or lp (a linear probe on frozen "
        "features, fitted once per sweep). LP-FT is init lp with name ft.")
    lp_l2: float = Field(1e-4, ge=0, description="L2 penalty of the linear-probe init (init: lp).")
    lp_steps: int = Field(100, ge=1, description="L-BFGS iterations of the linear-probe init (init: lp).")
    kl_weight: float = Field(1.0, ge=0, description="carft: weight of the KL term.")
    contexts: list[str] = Field(
        default_factory=lambda: ["photo", "sketch", "painting", "cartoon", "rendering", "drawing", "sculpture",
                                 "tattoo", "embroidery", "origami", "toy", "video game image"],
        min_length=2, description="carft: the contexts of the 'a {context} of a {class}.' prompts.")


# What a sweep's base (the one initialisation every trial starts from) is built from. They are the
# same for every trial of a sweep: searching one would make ingredients that cannot be souped.
SHARED_INIT_KEYS = ("model.name", "model.pretrained", "model.templates", "model.custom_templates",
                    "model.class_names", "model.class_descriptions", "method.init", "method.lp_l2",
                    "method.lp_steps")


def fixes_shared_init(key: str) -> bool:
    """Whether a dotted config key is (or lies under) one of SHARED_INIT_KEYS."""
    return any(key == fixed or key.startswith(fixed + ".") for fixed in SHARED_INIT_KEYS)


class AugConfig(Section):
    min_scale: float = Field(0.9, gt=0, le=1, description="RandomResizedCrop minimum area scale.")
    hflip: bool = Field(True, description="Random horizontal flips.")
    randaug_n: int = Field(0, ge=0, le=10, description="RandAugment operations per image (0: off).")
    randaug_m: int = Field(9, ge=0, le=30, description="RandAugment magnitude.")
    mixup_alpha: float = Field(0.0, ge=0, description="Mixup Beta(alpha, alpha); 0 turns mixup off.")
    cutmix_alpha: float = Field(
        0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 turns it off. With mixup on too, each batch uses "
        "one of the two, evenly.")


class TrainConfig(Section):
    """Everything one training run needs. Every field is documented in docs/config.md."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    aug: AugConfig = Field(default_factory=AugConfig)
    seed: int = Field(0, ge=0, description="Seed for initial shuffles, augmentation and mixup.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on GPUs that support it, fp32 elsewhere."
    )

    @field_validator("data")
    @classmethod
    def _data_paths_absolute(cls, data: DataConfig) -> DataConfig:
        # Tune runs trials in their own working directories: relative paths would break there.
        return data.model_copy(update=dict(
            train=absolute(data.train), val=absolute(data.val), heldout=absolute(data.heldout),
            test=absolute(data.test), shift={k: absolute(v) for k, v in data.shift.items()},
        ))

    def with_overrides(self, overrides: dict[str, Any]) -> "TrainConfig":
        """A copy with flat dotted overrides applied ({"optim.lr": 1e-5}), validated."""
        return type(self).model_validate(apply_overrides(self.model_dump(), overrides))

    def to_flat(self) -> dict[str, Any]:
        """Flat dotted params ({"optim.lr": 1e-5, ...}): the MLflow and Tune view of the config."""
        return flatten(self.model_dump(mode="json"))

    def to_params(self) -> dict[str, str]:
        """MLflow params: flat dotted keys, strings as they are, everything else as JSON."""
        return {k: param_text(v) for k, v in self.to_flat().items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "TrainConfig":
        """Inverse of `to_params` (extra params, such as a sweep's, are ignored)."""
        own = {k: v for k, v in params.items() if k.split(".")[0] in cls.model_fields}
        return cls.model_validate(apply_overrides({}, {k: _parse_param(v) for k, v in own.items()}))


def param_text(value: Any) -> str:
    """An MLflow param's text: a string as it is, anything else as JSON (`_parse_param` reads it back)."""
    return value if isinstance(value, str) else json.dumps(value)


def _parse_param(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def validate(model_type: type[BaseModel], tree: dict[str, Any], source: str = "config",
             overrides: Iterable[str] = ()) -> Any:
    """Validate a dict as `model_type`, turning pydantic's report into one actionable line; `overrides`:
    the dotted keys --set gave, so that a mistake in one is blamed on --set, not on the file."""
    try:
        return model_type.model_validate(tree)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, model_type, source, overrides)) from None


def describe_validation_error(err: ValidationError, model_type: type[BaseModel], source: str,
                              overrides: Iterable[str] = ()) -> str:
    """One line: `<source>: <key>: <problem>; ...`, with `--set <key>` for a key an override set (the user
    looks for the key where the message says it is)."""
    problems, set_problems, keys = [], [], tuple(overrides)
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"])
        from_set = bool(path) and any(path == key or path.startswith(key + ".") for key in keys)
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(allowed_keys(model_type, item["loc"][:-1]))
            problem = f"{path}: unknown key (allowed here: {allowed})"
        else:
            msg = item["msg"].removeprefix("Value error, ")
            got = "" if isinstance(item.get("input"), dict) else f" (got {item.get('input')!r})"
            problem = f"{path}: {msg}{got}" if path else msg
        (set_problems if from_set else problems).append(problem)
    return "; ".join(([f"{source}: " + "; ".join(problems)] if problems else [])
                     + [f"--set {problem}" for problem in set_problems])


def allowed_keys(model_type: type[BaseModel], parents: tuple) -> list[str]:
    """The field names valid at a nested location of a config model."""
    current: Any = model_type
    for part in parents:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ["<any>"]
        current = annotation
    return sorted(getattr(current, "model_fields", {}))
