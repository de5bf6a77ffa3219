from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from trainers.config import ModelConfig
from trainers.data.synthetic import CLASSES
from trainers.errors import UserError
from trainers.model import build_clip, build_zeroshot_classifier, state_checksum


def test_pretrained_local_file_is_loaded(pretrained_file):
    saved = load_file(pretrained_file)
    model = build_zeroshot_classifier(ModelConfig(pretrained=pretrained_file), CLASSES)
    for key, value in model.visual.state_dict().items():
        assert torch.equal(value, saved[f"visual.{key}"]), key
    random_init = build_zeroshot_classifier(ModelConfig(), CLASSES)
    assert state_checksum(random_init.state_dict()) != state_checksum(model.state_dict())


def test_zeroshot_head_is_clips_logits(pretrained_file):
    cfg = ModelConfig(pretrained=pretrained_file, templates="simple")
    clip = build_clip(cfg, pretrained_file).eval()
    model = build_zeroshot_classifier(cfg, CLASSES).eval()
    images = torch.rand(5, 3, 32, 32)
    from trainers.model import tokenizer_for
    normalised = (images - model.mean) / model.std
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(clip.encode_image(normalised), dim=-1)
        text = torch.nn.functional.normalize(clip.encode_text(tokenizer_for(cfg)([f"a photo of a {c}." for c in CLASSES])), dim=-1)
        expected = clip.logit_scale.exp() * image_features @ text.T
        assert torch.allclose(model(images), expected, atol=1e-4)


def test_unknown_architecture():
    with pytest.raises(UserError, match="unknown architecture 'ViT-Q-99'"):
        build_zeroshot_classifier(ModelConfig(name="ViT-Q-99"), CLASSES)


def test_pretrained_that_is_neither_file_nor_tag():
    with pytest.raises(UserError, match="neither an existing file nor an open_clip tag"):
        build_zeroshot_classifier(ModelConfig(pretrained="/no/such/file.pt"), CLASSES)


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # Offline, as on a machine without network (the variable is read when huggingface_hub is imported,
    # hence the constant too: otherwise every call waits for its connection timeouts).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to find offline
    from trainers.model import check_pretrained
    with pytest.raises(UserError, match="could not download ViT-B-32/laion2b_s34b_b79k.*model.pretrained=/path"):
        check_pretrained(ModelConfig(name="ViT-B-32", pretrained="laion2b_s34b_b79k"))
