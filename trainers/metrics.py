"""Metric names, defined once (Tune, checkpoint scoring, the soup's sort key and MLflow import them),
and the classification metrics of the soup report (macro-F1, ECE, per-class precision/recall, McNemar)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.distributed import all_reduce_sum

EPOCH = "epoch"
STEP = "step"
LR = "lr"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1"
SOUP_GAIN = "soup/gain"  # a trial's held-out gain to the anytime soup (sweep.soup_actor; search.objective)
DIVERGED = "diverged"  # 1.0 in the last report of a run whose training loss went non-finite
TIMELINE = "timeline/"  # prefix of a trial's phase stamps (time.time()), metrics of its MLflow run


VAL_MACRO_F1 = "val/macro_f1"
VAL_ECE = "val/ece"


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


# Evaluation during training, from sufficient statistics: each DDP rank accumulates, on its device and
# without host syncs, the confusion matrix, the summed loss and per-confidence-bin sums for ECE; one
# all-reduce then gives every rank the metrics of the whole split.
class EvalStats:
    """Sufficient statistics of one split's predictions (float64 so sums of counts stay exact)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", bins: int = ECE_BINS):
        self.num_classes, self.bins = num_classes, bins
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)  # [true, pred]
        self.bin_count = torch.zeros(bins, dtype=torch.float64, device=device)
        self.bin_correct = torch.zeros(bins, dtype=torch.float64, device=device)
        self.bin_confidence = torch.zeros(bins, dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> "EvalStats":
        logits, labels = logits.detach().double(), labels.to(logits.device).long()
        c = self.num_classes
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        confidence, preds = torch.softmax(logits, dim=-1).max(-1)
        self.confusion += torch.bincount(labels * c + preds, minlength=c * c).view(c, c).double()
        edges = torch.linspace(0, 1, self.bins + 1, dtype=torch.float64, device=logits.device)[1:-1]
        ids = torch.bucketize(confidence, edges, right=False)  # bins (lo, hi], as metrics.expected_calibration_error
        self.bin_count.index_add_(0, ids, torch.ones_like(confidence))
        self.bin_correct.index_add_(0, ids, (preds == labels).double())
        self.bin_confidence.index_add_(0, ids, confidence)
        return self

    def all_reduce(self) -> "EvalStats":
        """Sum the statistics over DDP ranks (in place; one collective call)."""
        parts = [self.confusion, self.bin_count, self.bin_correct, self.bin_confidence, self.loss_sum]
        flat = all_reduce_sum(torch.cat([t.reshape(-1) for t in parts]))
        offset = 0
        for t in parts:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        return self

    def summary(self, split: str) -> dict[str, float]:
        """`<split>/top1`, `/loss`, `/macro_f1`, `/ece` as Python floats (one host transfer)."""
        count = self.confusion.sum()
        _, _, f1, support = self.per_class()
        predicted = self.confusion.sum(0)
        seen = (support + predicted) > 0  # scikit-learn's macro average: classes in labels or predictions
        values = torch.stack([
            self.confusion.diagonal().sum() / count.clamp(min=1),
            self.loss_sum / count.clamp(min=1),
            f1[seen].sum() / seen.sum().clamp(min=1),
            (self.bin_correct - self.bin_confidence).abs().sum() / count.clamp(min=1),
        ]).tolist()
        return dict(zip((f"{split}/top1", f"{split}/loss", f"{split}/macro_f1", f"{split}/ece"), values))

    def per_class(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Precision, recall, F1 and support per class; 0 where undefined (scikit-learn's zero_division=0)."""
        tp = self.confusion.diagonal()
        predicted, support = self.confusion.sum(0), self.confusion.sum(1)
        precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
        denominator = predicted + support
        f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
        return precision, recall, f1, support

    def per_class_table(self, classes: list[str]) -> dict[str, list]:
        """The per-class report as columns (what mlflow.log_table takes): class, precision, recall, f1, support."""
        precision, recall, f1, support = (t.cpu() for t in self.per_class())
        return {"class": list(classes), "precision": precision.tolist(), "recall": recall.tolist(),
                "f1": f1.tolist(), "support": [int(s) for s in support.tolist()]}
