"""Metric names, defined once (Tune, checkpoint scoring, the soup's sort key and MLflow import them),
and the classification metrics of the soup report (macro-F1, ECE, per-class precision/recall, McNemar)."""
from __future__ import annotations

import math

import torch

EPOCH = "epoch"
STEP = "step"
LR = "lr"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1"
HELDOUT_TOP1 = "heldout/top1"
TEST_TOP1 = "test/top1"
DIVERGED = "diverged"  # 1.0 in the last report of a run whose training loss went non-finite


def top1_name(split: str) -> str:
    """'heldout' -> 'heldout/top1', 'shift/sketch' -> 'shift/sketch/top1'."""
    return f"{split}/top1"


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()


# Classification metrics on fixed predictions. The soup report uses them; tests check them against
# scikit-learn (and SciPy for McNemar), which the library itself does not depend on.
ECE_BINS = 15  # Guo et al. (2017): 15 equal-width confidence bins


def per_class_precision_recall(preds: torch.Tensor, labels: torch.Tensor,
                               num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall per class (float64); 0 where a class is never predicted / never present,
    as scikit-learn's zero_division=0."""
    tp, predicted, actual = _class_counts(preds, labels, num_classes)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    return precision, recall


def macro_f1(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in `labels` or `preds` (scikit-learn's
    average="macro"): a shift set that covers a class subset is not penalised for absent classes."""
    tp, predicted, actual = _class_counts(preds, labels, num_classes)
    seen = (predicted + actual) > 0
    denominator = predicted + actual  # 2tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    return f1[seen].mean().item() if seen.any() else 0.0


def _class_counts(preds: torch.Tensor, labels: torch.Tensor, num_classes: int):
    preds, labels = preds.reshape(-1).long().cpu(), labels.reshape(-1).long().cpu()
    tp = torch.bincount(labels[preds == labels], minlength=num_classes).double()
    return tp, torch.bincount(preds, minlength=num_classes).double(), torch.bincount(labels, minlength=num_classes).double()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of the top-label softmax confidence: sum over equal-width bins (lo, hi] of
    |accuracy - mean confidence| weighted by the bin's share of the samples."""
    probs = torch.softmax(logits.detach().double().cpu(), dim=-1)
    confidence, preds = probs.max(-1)
    correct = (preds == labels.reshape(-1).cpu()).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ids = torch.bucketize(confidence, edges[1:-1], right=False)  # (lo, hi]: numpy searchsorted 'left'
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, ids, correct - confidence)
    return (gap.abs().sum() / max(len(correct), 1)).item()


def mcnemar(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two classifiers on the same samples.

    Returns (b, c, p): b samples only A gets right, c samples only B gets right, and the p-value of
    b and c coming from one Binomial(b + c, 1/2). Exact rather than chi-square because soups and
    their best ingredient often disagree on only a handful of test images."""
    a, b_ = correct_a.reshape(-1).bool().cpu(), correct_b.reshape(-1).bool().cpu()
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return b, c, 1.0
    # P(X <= k) for X ~ Bin(n, 1/2), summed in log space so that large n does not overflow
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return b, c, min(1.0, 2 * tail)


def classification_report(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1, macro-F1 and ECE of one set of logits: the numbers every soup-report cell holds."""
    preds = logits.argmax(-1)
    num_classes = logits.shape[-1]
    return {"top1": top1(logits, labels.to(logits.device)),
            "macro_f1": macro_f1(preds, labels, num_classes),
            "ece": expected_calibration_error(logits, labels)}
