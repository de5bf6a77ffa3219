"""Named starting points for a sweep config: a preset is merged under the user's own keys."""
from __future__ import annotations

from typing import Any

# The search space of the model-soups paper (Wortsman et al., 2022, appendix: random hyper-parameter search).
MODEL_SOUPS = {"search": {"space": {
    "optim.lr": {"loguniform": [1e-6, 1e-4]},
    "optim.weight_decay": {"loguniform": [1e-4, 0.5]},
    "optim.epochs": {"randint": [4, 16]},
    "optim.label_smoothing": {"off_or_uniform": [0.0, 0.25]},
    "aug.mixup_alpha": {"off_or_uniform": [0.0, 0.9]},
    "aug.randaug_n": {"randint": [0, 2]},  # 0 turns RandAugment off
    "aug.randaug_m": {"randint": [1, 20]},
    "seed": {"randint": [0, 100_000]},
}}}

# The WiSE-FT fine-tuning recipe (Wortsman et al., 2022): one trial, AdamW with a cosine schedule.
WISEFT = {
    "optim": {"lr": 3e-5, "weight_decay": 0.1, "epochs": 10, "warmup_steps": 500},
    "search": {"num_samples": 1, "space": {}},
}

PRESETS: dict[str, dict[str, Any]] = {"model-soups": MODEL_SOUPS, "wiseft": WISEFT}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: `override` wins; nested mappings (search.space included) are merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
