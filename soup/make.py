"""make_soups: score every ingredient once, run the chosen methods in their declared order on what
only selection may see (held-out), then open the results for the report and tabulate every set."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from soup.inputs.base import Base
from soup.inputs.manifest import Ingredient
from soup.inputs.screening import listed, manifest_problem, require_usable
from soup.methods.context import SoupContext
from soup.methods.options import SoupOptions
from soup.methods.spec import METHODS
from soup.outputs.comparison import comparison_table, per_class_table
from soup.outputs.outcome import SoupOutcome, opened
from soup.scoring.batchnorm import recalibrator
from soup.scoring.evaluation import Evaluator, HeldoutOnly, build_evaluator
from soup.scoring.score import score_ingredients
from soup.scoring.sealed import Sealed
from trainers.device import resolve_device
from trainers.errors import UserError

log = logging.getLogger(__name__)


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
    evaluator = evaluator or build_evaluator(base, resolve_device(options.device, "soup device"))
    scoring = score_ingredients(candidates, base, evaluator, options.init_tolerance, workdir, skipped,
                                options.eval_workers, options.outlier_z)
    if not scoring.scored:
        raise UserError(f"no usable ingredients among {len(ingredients)} trials: {listed(skipped)}")
    if scoring.moved_batchnorm:
        evaluator.recalibrate = recalibrator(base, evaluator, scoring.moved_batchnorm, options.bn_images)
    # The anytime soup scored its soups without recomputing BatchNorm statistics: not reused then.
    ctx = SoupContext(HeldoutOnly(evaluator), options, base.file, spool_dir=workdir / "soups",
                      soup_meta=soup_meta(base), greedy_start=None if scoring.moved_batchnorm else greedy_start)
    pool = [replace(s, logits=Sealed(s.logits)) for s in scoring.scored]  # selection sees held-out only
    for name in tqdm(options.planned_methods(), desc="soup methods"):  # registry order: dependencies first
        made = METHODS[name].function()(pool, ctx)
        for result in made if isinstance(made, list) else [made]:
            ctx.done[result.name] = result
    results = [opened(r, evaluator) for r in ctx.done.values()]  # every choice is made: the report opens them
    outcome = SoupOutcome(results, scoring.scored, skipped, classes=base.classes)
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


def soup_meta(base: Base) -> dict:
    """What every soup checkpoint's meta.json says besides its method: enough to rebuild the model."""
    return {"config": base.config.model_dump(mode="json"), "classes": base.classes,
            "base_checksum": base.checksum, "metrics": {}}
