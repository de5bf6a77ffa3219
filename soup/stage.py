"""The soup stage: score every ingredient once, run the chosen methods, tabulate every set."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from soup.batchnorm import Recalibrator
from soup.comparison import comparison_table, per_class_table
from soup.context import MethodResult, SoupContext
from soup.evaluation import Evaluator, Scored
from soup.ingredients import USABLE, Ingredient
from soup.methods import METHODS
from soup.options import SoupOptions
from soup.scoring import Base, score_ingredients, training_images
from soup.screening import manifest_problem
from soup.splits import load_eval_sets
from trainers.baselines import BASELINES_JSON, Baselines
from trainers.checkpoint import WEIGHTS, local_checkpoint, read_meta
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.model import build_classifier

log = logging.getLogger(__name__)


@dataclass
class SoupOutcome:
    results: list[MethodResult]
    scored: list[Scored]
    skipped: dict[str, str]  # trial id -> why it is not an ingredient
    table: list[dict] = field(default_factory=list)  # one row per method (or trial) and set
    per_class: list[dict] = field(default_factory=list)  # precision and recall per method, set and class
    classes: list[str] = field(default_factory=list)


def make_soups(ingredients: list[Ingredient], base: Base, options: SoupOptions, workdir: Path,
               evaluator: Evaluator | None = None, greedy_start: dict | None = None) -> SoupOutcome:
    """Evaluate the usable ingredients once, then run the planned methods on the cached evaluations.
    Soups are written to `workdir`/soups as they are made (the caller owns `workdir`). `evaluator`:
    one already holding the model and the evaluation sets (benchmarks), else built from `base`.
    `greedy_start`: the sweep's anytime soup ({members, trace}), which the greedy soup starts from."""
    skipped: dict[str, str] = {}
    candidates = []
    for ingredient in ingredients:
        problem = manifest_problem(ingredient, base.checksum)
        if problem:
            skipped[ingredient.trial_id] = problem
            log.warning("leaving out trial %s: %s", ingredient.trial_id, problem)
        else:
            candidates.append(ingredient)
    require_usable(ingredients)
    evaluator = evaluator or build_evaluator(base, resolve_device(options.device))
    scoring = score_ingredients(candidates, base, evaluator, options.init_tolerance, workdir, skipped,
                                options.eval_workers, options.outlier_z)
    if not scoring.scored:
        raise UserError(f"no usable ingredients among {len(ingredients)} trials: {_listed(skipped)}")
    if scoring.moved_batchnorm:
        evaluator.recalibrate = recalibrator(base, evaluator, scoring.moved_batchnorm, options.bn_images)
    # The anytime soup scored its soups without recomputing BatchNorm statistics: not reused then.
    ctx = SoupContext(evaluator, options, base.file, spool_dir=workdir / "soups", soup_meta=soup_meta(base),
                      greedy_start=None if scoring.moved_batchnorm else greedy_start)
    for name in tqdm(options.planned_methods(), desc="soup methods"):
        made = METHODS[name](scoring.scored, ctx)
        for result in made if isinstance(made, list) else [made]:
            ctx.done[result.name] = result
    outcome = SoupOutcome(list(ctx.done.values()), scoring.scored, skipped, classes=base.classes)
    outcome.table = comparison_table(outcome.results, outcome.scored, evaluator, baseline_logits(base, evaluator))
    outcome.per_class = per_class_table(outcome.results, evaluator, base.classes)
    return outcome


def baseline_logits(base: Base, evaluator: Evaluator) -> dict[str, dict[str, torch.Tensor]]:
    """Method -> set -> logits of the sweep's training-free baselines, on the sets this stage
    evaluates; none when the sweep computed none or its sets no longer hold the same images' labels."""
    if base.baselines is None:
        return {}
    names = [s.name for s in evaluator.sets]
    stale = [n for n in names if n not in base.baselines.labels
             or not torch.equal(base.baselines.labels[n], evaluator.labels(n).cpu())]
    if stale:
        log.warning("not showing the training-free baselines: they were computed on other data than %s",
                    ", ".join(stale))
        return {}
    return {method: {n: sets[n] for n in names} for method, sets in base.baselines.logits.items()}


def require_usable(ingredients: list[Ingredient]) -> None:
    """Refuse at once (before any model is built) a sweep none of whose trials can be an ingredient."""
    if not any(i.status in USABLE for i in ingredients):
        reasons = {i.trial_id: manifest_problem(i, "") for i in ingredients}
        raise UserError(f"the sweep has no finished trials ({len(ingredients)} trials: " + _listed(reasons)
                        + "); let it finish or run a new sweep before making soups")


def build_evaluator(base: Base, device: torch.device) -> Evaluator:
    model = build_classifier(base.config.model, len(base.classes))
    sets = load_eval_sets(base.config.data, model.image_size, device)
    return Evaluator(model, sets, device, base.config.precision)


def recalibrator(base: Base, evaluator: Evaluator, layers: set[str], count: int) -> Recalibrator:
    """BatchNorm statistics of soups are recomputed on training images; without any, refuse."""
    if not base.config.data.train:
        raise UserError(f"the ingredients trained {len(layers)} BatchNorm layers (e.g. {sorted(layers)[0]}): "
                        "soups need their statistics recomputed on training images; pass --train <split.parquet>")
    log.info("recomputing the statistics of %d BatchNorm layers for every soup on %d training images",
             len(layers), count)
    images = training_images(base.config.data.train, evaluator.model.image_size, count)
    return Recalibrator(layers, images.to(evaluator.device), evaluator.device, evaluator.precision)


def base_from_checkpoint(uri: str, workdir: Path) -> Base:
    """The base a sweep wrote (local path or any pyarrow.fs URI), its weights kept local for the stage."""
    try:
        with local_checkpoint(uri) as path:
            meta = read_meta(path)
            file = _local_weights(uri, path, workdir)
            baselines = Baselines.load(path) if (path / BASELINES_JSON).is_file() else None
    except (OSError, ValueError) as err:
        raise UserError(f"the sweep's base checkpoint {uri} cannot be read ({type(err).__name__}: {err}); "
                        "it is written when the sweep starts: check the storage the sweep used") from None
    return Base(TrainConfig.model_validate(meta["config"]), meta["classes"], file, meta.get("base_checksum", ""),
                meta.get("head_init", ""), meta, baselines)


def _local_weights(uri: str, path: Path, workdir: Path) -> Path:
    """The base's weights file, copied into the work directory when `uri` is remote."""
    if "://" in uri and not uri.startswith("file://"):
        shutil.copyfile(path / WEIGHTS, workdir / "base.safetensors")
        return workdir / "base.safetensors"
    return path / WEIGHTS


def soup_meta(base: Base) -> dict:
    """What every soup checkpoint's meta.json says besides its method: enough to rebuild the model."""
    return {"config": base.config.model_dump(mode="json"), "classes": base.classes,
            "base_checksum": base.checksum, "metrics": {}}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"soup device {name!r}: use auto, cpu, cuda or cuda:N") from None


def _listed(skipped: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in skipped.items())
