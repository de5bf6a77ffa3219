"""Training-free baselines, computed once per sweep and shown beside the fine-tuned models.

- `zeroshot`: the pretrained CLIP with the zero-shot head of the prompt ensemble (templates, class
  names and descriptions of `model`), whatever head the sweep's base starts from.
- `tip_adapter` (Zhang et al. 2022, training-free Tip-Adapter): a cache whose keys are the training
  images' normalised features and whose values are their one-hot labels, added to the zero-shot logits:
  logits = zero-shot + alpha * exp(-beta * (1 - f @ keys.T)) @ values. alpha and beta are chosen on
  held-out (alpha = 0 is in the grid, so it never does worse there than zero-shot). The cache holds
  at most `shots` seeded training images per class (the paper's few-shot cache; None: all of them),
  which bounds its memory and the decoding on large training sets.
Features are computed once per split with the frozen tower (no augmentation).
"""
from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainers.base import pretrained_start
from trainers.config import TrainConfig
from trainers.data.cache import covers_mask, project_logits
from trainers.data.store import check_dataset, read_columns, read_covers
from trainers.evaluate import split_features
from trainers.metrics import classification_report

log = logging.getLogger(__name__)
ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
BETAS = (0.5, 1.0, 2.0, 3.5, 5.5, 7.0)
METHODS = ("zeroshot", "tip_adapter")
BASELINES_JSON = "baselines.json"
BASELINES_TENSORS = "baselines.safetensors"


@dataclass
class Baselines:
    logits: dict[str, dict[str, torch.Tensor]]  # method -> set name -> logits (CPU)
    labels: dict[str, torch.Tensor]  # set name -> labels (CPU)
    tip_alpha: float = 0.0
    tip_beta: float = 0.0
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # method -> set -> report

    def save(self, directory: str | Path) -> None:
        """`baselines.json` (metrics, alpha, beta) and `baselines.safetensors` (logits and labels) in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"logits/{m}/{name}": t.contiguous() for m, sets in self.logits.items() for name, t in sets.items()}
        tensors.update({f"labels/{name}": t.contiguous() for name, t in self.labels.items()})
        save_file(tensors, str(directory / BASELINES_TENSORS))
        summary = {"tip_alpha": self.tip_alpha, "tip_beta": self.tip_beta, "metrics": self.metrics}
        (directory / BASELINES_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> "Baselines":
        directory = Path(directory)
        summary = json.loads((directory / BASELINES_JSON).read_text())
        logits: dict[str, dict[str, torch.Tensor]] = {}
        labels: dict[str, torch.Tensor] = {}
        for key, tensor in load_file(str(directory / BASELINES_TENSORS)).items():
            kind, rest = key.split("/", 1)
            if kind == "labels":
                labels[rest] = tensor
            else:
                method, name = rest.split("/", 1)
                logits.setdefault(method, {})[name] = tensor
        ordered = {method: logits[method] for method in METHODS if method in logits}  # as reports list them
        return cls(ordered, labels, summary["tip_alpha"], summary["tip_beta"], summary["metrics"])


def training_free_baselines(cfg: TrainConfig, device: torch.device, shots: int | None = 16,
                            chunk: int = 1024) -> Baselines:
    """Zero-shot and Tip-Adapter logits and metrics on held-out, test and every shift set."""
    classes = check_dataset(cfg.data)
    classifier, _ = pretrained_start(cfg, classes)  # the sweep's zero-shot model, whatever head its base has
    classifier.to(device)
    sets = {"heldout": cfg.data.heldout, "test": cfg.data.test,
            **{f"shift/{name}": path for name, path in sorted(cfg.data.shift.items())}}
    keys, train_labels = split_features(classifier, cfg.data.train, device, cfg.precision,
                                        cache_rows(cfg.data.train, shots))
    log.info("Tip-Adapter: a cache of %d training images", len(train_labels))
    values = torch.nn.functional.one_hot(train_labels, len(classes)).float()
    features, zeroshot, labels = {}, {}, {}
    for name, path in sets.items():  # streamed: only features are kept, never a set's pixels
        features[name], labels[name] = split_features(classifier, path, device, cfg.precision)
        with torch.no_grad():
            zeroshot[name] = classifier.head(features[name]).float()
    alpha, beta = choose_tip(features["heldout"], zeroshot["heldout"], labels["heldout"], keys, values, chunk)
    log.info("Tip-Adapter: alpha %.2f, beta %.2f chosen on held-out", alpha, beta)
    out = Baselines({method: {} for method in METHODS}, {}, alpha, beta)
    for name in sets:
        tip = zeroshot[name] + alpha * cache_logits(features[name], keys, values, beta, chunk)
        covered = covers_mask(classes, read_covers(sets[name]))  # a shift set on a class subset
        for method, logits in (("zeroshot", zeroshot[name]), ("tip_adapter", tip)):
            out.logits[method][name] = project_logits(logits, covered).cpu()
        out.labels[name] = labels[name].cpu()
    out.metrics = {method: {name: classification_report(logits, out.labels[name]) for name, logits in sets_.items()}
                   for method, sets_ in out.logits.items()}
    return out


def cache_rows(path: str, shots: int | None, seed: int = 0) -> list[int] | None:
    """Row indices of at most `shots` training images per class, drawn with a fixed seed; None: all rows."""
    if shots is None:
        return None
    labels = read_columns(path, ["label"]).column("label").to_pylist()
    taken: Counter[int] = Counter()
    rows = []
    for row in torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist():
        if taken[labels[row]] < shots:
            taken[labels[row]] += 1
            rows.append(row)
    return sorted(rows)


@torch.no_grad()
def cache_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float,
                 chunk: int = 1024) -> torch.Tensor:
    """exp(-beta * (1 - cosine similarity to every cached training image)) @ one-hot labels, in row chunks."""
    return torch.cat([torch.exp(-beta * (1 - features[i:i + chunk] @ keys.T)) @ values
                      for i in range(0, len(features), chunk)])


@torch.no_grad()
def choose_tip(features: torch.Tensor, zeroshot: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor, chunk: int = 1024) -> tuple[float, float]:
    """(alpha, beta) of the grid with the best held-out top-1; ties go to the smaller alpha, then beta."""
    caches = {beta: cache_logits(features, keys, values, beta, chunk) for beta in BETAS}
    best, choice = -1.0, (0.0, BETAS[0])
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        accuracy = ((zeroshot + alpha * caches[beta]).argmax(-1) == labels).float().mean().item()
        if accuracy > best:
            best, choice = accuracy, (alpha, beta)
    return choice
