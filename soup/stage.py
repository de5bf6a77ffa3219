"""The soup stage: score every ingredient once, run the chosen methods, tabulate every set."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from soup.evaluation import Evaluator, Scored, accuracy
from soup.ingredients import USABLE, Ingredient, load_ingredient
from soup.methods import METHODS, MethodResult, SoupContext, TieRule
from soup.splits import load_eval_sets
from soup.statedict import IncompatibleIngredient, check_compatible, normalise_keys
from trainers.checkpoint import load_checkpoint, local_checkpoint
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


def make_soups(ingredients: list[Ingredient], base_dir: str, methods: list[str], device: torch.device,
               tie_rule: TieRule = ">=") -> SoupOutcome:
    """Evaluate the finished ingredients once, then run `methods` on the cached evaluations."""
    skipped = {i.trial_id: f"status {i.status}" + (f": {i.reason}" if i.reason else "")
               for i in ingredients if i.status not in USABLE}
    if len(skipped) == len(ingredients):
        raise UserError(f"the sweep has no finished trials ({len(ingredients)} trials: "
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                        + "); let it finish or run a new sweep before making soups")
    with local_checkpoint(base_dir) as local_base:
        base = load_checkpoint(local_base)
    cfg = TrainConfig.model_validate(base.meta["config"])
    model = build_classifier(cfg.model, len(base.meta["classes"]))
    evaluator = Evaluator(model, load_eval_sets(cfg.data, model.image_size, device), device, cfg.precision)
    scored = []
    for ingredient in tqdm([i for i in ingredients if i.status in USABLE], desc="evaluating ingredients"):
        problem = _score(ingredient, base.state_dict, base.meta["base_checksum"], evaluator, scored)
        if problem:
            skipped[ingredient.trial_id] = problem
            log.warning("leaving out trial %s: %s", ingredient.trial_id, problem)
    if not scored:
        raise UserError(f"no usable ingredients among {len(ingredients)} trials: "
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    ctx = SoupContext(evaluator, base.state_dict, tie_rule)
    results = [METHODS[name](scored, ctx) for name in tqdm(methods, desc="soup methods")]
    outcome = SoupOutcome(results, scored, skipped)
    outcome.table = comparison_table(outcome, evaluator)
    return outcome


def _score(ingredient: Ingredient, base_state, base_checksum: str, evaluator: Evaluator,
           scored: list[Scored]) -> str | None:
    """Evaluate one ingredient and append it to `scored`; returns why it was left out, if it was."""
    if ingredient.base_checksum != base_checksum:
        return (f"different initialisation (base checksum {ingredient.base_checksum[:12]} != "
                f"{base_checksum[:12]}): soups need one shared initialisation")
    try:
        state = normalise_keys(load_ingredient(ingredient.checkpoint).state_dict)
        check_compatible(base_state, state)
    except IncompatibleIngredient as err:
        return f"incompatible weights: {err}"
    except Exception as err:  # a corrupt or missing file: leave it out, keep souping the rest
        return f"unreadable checkpoint {ingredient.checkpoint}: {type(err).__name__}: {err}"
    logits = evaluator.logits(state)
    heldout = accuracy(logits["heldout"], evaluator.labels("heldout"))
    scored.append(Scored(ingredient, logits, heldout))
    return None


def comparison_table(outcome: SoupOutcome, evaluator: Evaluator) -> list[dict]:
    """Rows of (method, set, top1, cost, size): every method, then every trial, on every set."""
    rows = []
    entries = [(r.name, r.logits, r.cost, len(r.members)) for r in outcome.results]
    entries += [(f"trial:{s.trial_id}", s.logits, 1, 1) for s in outcome.scored]
    for name, logits, cost, size in entries:
        for set_name, set_logits in logits.items():
            rows.append({"method": name, "set": set_name, "top1": accuracy(set_logits, evaluator.labels(set_name)),
                         "cost": cost, "ingredients": size})
    return rows
