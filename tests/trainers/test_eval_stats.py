"""Training-time metrics from sufficient statistics against scikit-learn, and their sum over ranks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from trainers.metrics import EvalStats, expected_calibration_error


def fixed_predictions(n: int = 400, classes: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    labels[labels == 5] = 4  # class 5 never occurs: an imbalanced set with an absent class
    logits = torch.randn(n, classes, generator=gen) * 2
    logits[torch.arange(n), labels] += 1.0
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_summary_and_per_class_report_equal_sklearn(seed):
    logits, labels = fixed_predictions(seed=seed)
    preds = logits.argmax(-1)
    stats = EvalStats(6)
    for part in range(4):  # accumulated batch by batch, as the evaluation does
        stats.add(logits[part::4], labels[part::4])
    summary = stats.summary("val")
    assert summary["val/top1"] == pytest.approx(accuracy_score(labels, preds))
    assert summary["val/macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    assert summary["val/loss"] == pytest.approx(F.cross_entropy(logits.double(), labels).item())
    assert summary["val/ece"] == pytest.approx(expected_calibration_error(logits, labels), abs=1e-12)
    assert summary["val/ece"] > 0.01

    table = stats.per_class_table([f"c{i}" for i in range(6)])
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=list(range(6)),
                                                                     zero_division=0)
    assert table["class"] == [f"c{i}" for i in range(6)]
    assert np.allclose(table["precision"], precision) and np.allclose(table["recall"], recall)
    assert np.allclose(table["f1"], f1) and table["support"] == support.tolist()


def _rank(rank: int, world: int, port: int, logits, labels, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        stats = EvalStats(6).add(logits[rank::world], labels[rank::world]).all_reduce()
        out[rank] = stats.summary("val")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes
def test_ranks_agree_on_the_metrics_of_the_whole_split(unused_tcp_port):
    logits, labels = fixed_predictions()
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(2, unused_tcp_port, logits, labels, out), nprocs=2)
    whole = EvalStats(6).add(logits, labels).summary("val")
    assert out[0] == out[1]
    assert out[0] == pytest.approx(whole)


@pytest.fixture
def unused_tcp_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
