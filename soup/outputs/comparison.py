"""The comparison: every method (and every trial, and the sweep's training-free baselines) on every
set, with top-1, macro-F1, ECE, inference cost, the average over the shift sets, and a McNemar test
of each method against the best single model on test (the one a user would otherwise deploy)."""
from __future__ import annotations

import statistics

import torch

from soup.methods.context import MethodResult
from soup.scoring.evaluation import Scored
from trainers.metrics import classification_report, mcnemar, per_class_precision_recall

SHIFT_AVG = "shift/avg"
BASELINE = "baseline:"  # the prefix of the training-free baselines' rows
TRIAL = "trial:"  # the prefix of single trials' rows
TEST = "test"


def comparison_table(results: list[MethodResult], scored: list[Scored], evaluator,
                     baselines: dict[str, dict[str, torch.Tensor]] | None = None) -> list[dict]:
    """Rows of (method, set, top1, macro_f1, ece, cost, ingredients, mcnemar_b/c/p): methods first, then
    the training-free `baselines` (name -> set -> logits) as `baseline:<name>`, then each trial as
    `trial:<id>`. McNemar cells are filled on test rows of methods and baselines."""
    best = max(scored, key=lambda s: s.heldout_top1)
    best_right = _correct(best.logits[TEST], evaluator.labels(TEST))
    entries = [(r.name, r.logits, r.cost, len(r.members), True) for r in results]
    entries += [(f"{BASELINE}{name}", logits, 1, 0, True) for name, logits in (baselines or {}).items()]
    entries += [(f"{TRIAL}{s.trial_id}", s.logits, 1, 1, False) for s in scored]
    rows = []
    for name, logits, cost, size, is_method in entries:
        cells = {set_name: classification_report(values, evaluator.labels(set_name))
                 for set_name, values in logits.items()}
        shift = [c for set_name, c in cells.items() if set_name.startswith("shift/")]
        if shift:
            cells[SHIFT_AVG] = {k: statistics.fmean(c[k] for c in shift) for k in shift[0]}
        for set_name, cell in cells.items():
            row = {"method": name, "set": set_name, **cell, "cost": cost, "ingredients": size,
                   "mcnemar_b": None, "mcnemar_c": None, "mcnemar_p": None}
            if is_method and set_name == TEST and name != "best":
                b, c, p = mcnemar(best_right, _correct(logits[TEST], evaluator.labels(TEST)))
                row.update(mcnemar_b=b, mcnemar_c=c, mcnemar_p=p)
            rows.append(row)
    return rows


def per_class_table(results: list[MethodResult], evaluator, classes: list[str]) -> list[dict]:
    """Precision, recall and support of every class, per method and set."""
    rows = []
    for result in results:
        for set_name, logits in result.logits.items():
            labels = evaluator.labels(set_name).cpu()
            precision, recall = per_class_precision_recall(logits.argmax(-1).cpu(), labels, len(classes))
            support = torch.bincount(labels, minlength=len(classes))
            rows += [{"method": result.name, "set": set_name, "class": name, "precision": precision[i].item(),
                      "recall": recall[i].item(), "support": int(support[i])} for i, name in enumerate(classes)]
    return rows


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1).cpu() == labels.cpu()
