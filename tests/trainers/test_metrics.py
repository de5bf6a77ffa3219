"""The report's metrics against scikit-learn and SciPy on fixed predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import f1_score, precision_score, recall_score

from trainers.metrics import (ECE_BINS, classification_report, expected_calibration_error, macro_f1, mcnemar,
                              per_class_precision_recall)


def fixed_predictions(n: int = 300, classes: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    logits = torch.randn(n, classes, generator=gen) * 2
    logits[torch.arange(n), labels] += 1.5  # better than chance, not perfect
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_and_macro_f1_match_sklearn(seed):
    logits, labels = fixed_predictions(seed=seed)
    preds = logits.argmax(-1)
    precision, recall = per_class_precision_recall(preds, labels, 5)
    all_classes = list(range(5))
    assert np.allclose(precision.numpy(), precision_score(labels, preds, average=None, labels=all_classes,
                                                          zero_division=0))
    assert np.allclose(recall.numpy(), recall_score(labels, preds, average=None, labels=all_classes,
                                                    zero_division=0))
    assert macro_f1(preds, labels, 5) == pytest.approx(f1_score(labels, preds, average="macro"))


def test_macro_f1_ignores_classes_absent_from_a_subset_shift_set():
    labels = torch.tensor([0, 0, 1, 1, 1, 0])  # a shift set with 2 of 6 classes
    preds = torch.tensor([0, 1, 1, 1, 5, 0])  # one prediction of a class the set lacks
    assert macro_f1(preds, labels, 6) == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    precision, _ = per_class_precision_recall(preds, labels, 6)
    assert precision[3] == 0 and precision[5] == 0  # never right, never predicted: 0, not nan


@pytest.mark.parametrize("seed", [0, 3])
def test_ece_matches_sklearn_calibration_curve(seed):
    logits, labels = fixed_predictions(seed=seed)
    confidence, preds = torch.softmax(logits.double(), -1).max(-1)
    correct = (preds == labels).numpy().astype(float)
    prob_true, prob_pred = calibration_curve(correct, confidence.numpy(), n_bins=ECE_BINS, strategy="uniform")
    # sklearn drops empty bins; count the others with its own binning rule, (lo, hi]
    ids = np.searchsorted(np.linspace(0, 1, ECE_BINS + 1)[1:-1], confidence.numpy())
    counts = np.bincount(ids, minlength=ECE_BINS)
    counts = counts[counts > 0]
    expected = float(np.sum(counts / len(correct) * np.abs(prob_true - prob_pred)))
    assert expected > 0.01  # the fixture is miscalibrated enough for the test to mean something
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-12)


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    # two classes, confidence exactly 0.75 everywhere, right on 3 of 4 samples
    logits = torch.tensor([[np.log(3.0), 0.0]] * 4)
    assert expected_calibration_error(logits, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(logits, torch.tensor([1, 1, 1, 1])) == pytest.approx(0.75)


@pytest.mark.parametrize("b, c", [(0, 0), (3, 0), (5, 7), (40, 12), (12, 40), (600, 560), (9, 9)])
def test_mcnemar_matches_an_exact_binomial_test(b, c):
    a_right = torch.tensor([True] * b + [False] * c + [True] * 10 + [False] * 4)
    b_right = torch.tensor([False] * b + [True] * c + [True] * 10 + [False] * 4)
    got_b, got_c, p = mcnemar(a_right, b_right)
    assert (got_b, got_c) == (b, c)
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-9)


def test_classification_report_bundles_the_cell():
    logits, labels = fixed_predictions()
    report = classification_report(logits, labels)
    assert report["top1"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert report["macro_f1"] == pytest.approx(f1_score(labels, logits.argmax(-1), average="macro"))
    assert report["ece"] == pytest.approx(expected_calibration_error(logits, labels))
