"""The real open_clip configs (random weights, full size) through build_zeroshot_classifier, one forward pass."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from trainers.config import ModelConfig
from trainers.errors import UserError
from trainers.model import build_classifier, build_zeroshot_classifier

REAL = ["ViT-B-32", "RN50", "convnext_base", "ViT-B-16-SigLIP", "EVA02-B-16", "MobileCLIP-S1", "coca_ViT-B-32"]
CLASSES = ["cat", "dog", "bird"]
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_config_builds_and_classifies(name, request):
    cfg = ModelConfig(name=name, templates="simple")
    torch.manual_seed(0)
    if "SigLIP" in name:  # its tokenizer is a Hugging Face download: offline (as here, and forced so on
        request.getfixturevalue("hf_offline")  # any machine), one line saying how to get it; then the image side
        reason = "could not load the Hugging Face tokenizer" if HAS_TRANSFORMERS else "pip install transformers"
        with pytest.raises(UserError, match=reason):
            build_zeroshot_classifier(cfg, CLASSES)
        model = build_classifier(cfg, len(CLASSES))
    else:
        model = build_zeroshot_classifier(cfg, CLASSES)
    size = model.image_size
    with torch.no_grad():
        logits = model.eval()(torch.rand(1, 3, size, size))
    assert logits.shape == (1, len(CLASSES)) and torch.isfinite(logits).all()
