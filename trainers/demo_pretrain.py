"""Stand-in pretrained weights for the demo and the tests, since CLIP weights cannot be downloaded
everywhere: the tiny model trained contrastively (image vs. its class prompts, both towers) on
generated shapes of both styles.

Fine-tuning then starts, as with real CLIP, from a shared initialisation whose zero-shot head
already works in and out of distribution: the setting where soups and robustness numbers mean
something. The result is an ordinary open_clip checkpoint file, used through `model.pretrained`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from trainers.config import ModelConfig
from trainers.data.synthetic import CLASSES, render
from trainers.model import build_clip, input_size, preprocess_stats, tokenizer_for
from trainers.prompts import TEMPLATES


def pretrain_demo_clip(out_file: str | Path, model: ModelConfig | None = None, epochs: int = 25,
                       images: int = 1024, seed: int = 1234) -> Path:
    """Train the tiny CLIP on generated photo and sketch shapes; save its weights to `out_file`."""
    model = model or ModelConfig()
    torch.manual_seed(seed)
    clip, tokenizer = build_clip(model), tokenizer_for(model)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (images,), generator=gen)
    half = images // 2
    size = input_size(clip.visual)
    pixels = torch.cat([render(labels[:half], "photo", size, gen), render(labels[half:], "sketch", size, gen)])
    templates = TEMPLATES[model.templates]
    prompts = tokenizer([t.format(name) for name in CLASSES for t in templates])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in preprocess_stats(clip))
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(epochs):
        for batch in torch.randperm(images, generator=gen).split(64):
            image = F.normalize(clip.encode_image((pixels[batch].float() / 255 - mean) / std), dim=-1)
            text = F.normalize(clip.encode_text(prompts), dim=-1).view(len(CLASSES), len(templates), -1)
            logits = clip.logit_scale.exp() * image @ F.normalize(text.mean(1), dim=-1).T
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(out_file))
    return Path(out_file)
