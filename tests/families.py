"""Tiny versions of each open_clip model family, derived from the family's real open_clip config.

Each keeps its family's code path (tower class, pooling, projection, activation, logit bias,
CoCa's multimodal decoder) and shrinks width, depth and image size; a timm tower becomes the
smallest timm model of its family (open_clip passes no size arguments to timm) at a small image size.
Text towers become a one-layer CLIP text transformer with open_clip's own tokenizer (the Hugging Face
tokenizers of SigLIP need `transformers` and a download), except for the Hugging Face text tower family:
its `hf_model_name` / `hf_tokenizer_name` point at a tiny RoBERTa directory the test writes (loaded
offline by `transformers`, as a user's local copy of a Hugging Face model would be).
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_VIT = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}

# family -> (real open_clip config, embed_dim, vision_cfg overrides)
FAMILIES = {
    "vit": ("ViT-B-32", 32, TINY_VIT),
    "vit-quickgelu": ("ViT-B-32-quickgelu", 32, TINY_VIT),
    "resnet": ("RN50", 32, {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}),
    "convnext": ("convnext_base", 32, {"timm_model_name": "convnext_atto", "image_size": 32, "timm_drop_path": 0.0}),
    # SigLIP (named apart: open_clip picks its T5 tokenizer for any name with "siglip" in it);
    # timm_proj none: the tower's width is the embedding (vit_tiny is 192 wide)
    "sigmoid": ("ViT-B-16-SigLIP", 192, {"timm_model_name": "vit_tiny_patch16_224", "image_size": 32}),
    "eva": ("EVA02-B-16", 32, {"timm_model_name": "eva02_tiny_patch14_224", "image_size": 28}),
    "mobileclip": ("MobileCLIP-S1", 32, {"timm_model_name": "fastvit_mci0", "image_size": 32}),
    "coca": ("coca_ViT-B-32", 32, {**TINY_VIT, "attn_pooler_heads": 2}),
    # text tower: a Hugging Face RoBERTa (mean pooler, MLP projection), as in xlm-roberta-base-ViT-B-32
    "hf-text": ("roberta-ViT-B-32", 32, TINY_VIT),
}
TINY_MULTIMODAL = {"context_length": 16, "width": 32, "heads": 2, "layers": 1, "attn_pooler_heads": 2}


def tiny_config(family: str, directory: Path) -> dict:
    """The tiny config of `family` (a Hugging Face text tower is written into `directory`)."""
    real, embed_dim, vision = FAMILIES[family]
    cfg = open_clip.get_model_config(real)
    cfg["embed_dim"] = embed_dim
    cfg["vision_cfg"].update(vision)
    if "hf_model_name" in cfg["text_cfg"]:
        hf_dir = str(write_tiny_roberta(Path(directory) / f"tiny-{family}-text"))  # loaded from there, offline
        cfg["text_cfg"].update(hf_model_name=hf_dir, hf_tokenizer_name=hf_dir,
                               context_length=TINY_TEXT["context_length"])
    else:
        text = {k: v for k, v in cfg["text_cfg"].items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs")}
        cfg["text_cfg"] = {**text, **TINY_TEXT}
    if "multimodal_cfg" in cfg:
        cfg["multimodal_cfg"].update(TINY_MULTIMODAL)
    return cfg


def write_tiny_config(family: str, directory: Path) -> str:
    """The tiny config of `family` as an open_clip model config file; returns its path (model.name)."""
    path = Path(directory) / f"tiny-{family}.json"
    path.write_text(json.dumps(tiny_config(family, directory)))
    return str(path)


def write_tiny_roberta(directory: Path) -> Path:
    """A Hugging Face RoBERTa directory as `save_pretrained` writes it: roberta-base's config shrunk to
    width 32, 2 layers, 2 heads, and its byte-level BPE tokenizer with the 256 byte tokens and no merges
    (it tokenises any text, one token per byte)."""
    from tokenizers.pre_tokenizers import ByteLevel  # with transformers (the test extra), only needed here
    from transformers import RobertaConfig

    directory.mkdir(parents=True)
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", *sorted(ByteLevel.alphabet()),
                                                 "<mask>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=TINY_TEXT["context_length"] + 2,
                  type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                  eos_token_id=2).save_pretrained(directory)
    return directory
