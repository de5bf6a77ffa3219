"""Which open_clip model `model.name` means, and its pretrained weights: everything open_clip can build.

A name is an open_clip built-in (ViT-B-32, convnext_base, ViT-B-16-SigLIP, coca_ViT-B-32, ...), one of
the configs we ship, a path to a model config JSON, or open_clip's `hf-hub:org/repo` / `local-dir:/path`.
Config files are registered with open_clip (`open_clip.add_model_config`), so every kind of name is
then built, tokenised and described by open_clip itself: its model config says the feature size and
image size, its preprocessing config the normalisation.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import open_clip
from open_clip.factory import _find_checkpoint_in_dir, parse_model_name  # how open_clip reads local-dir:
import torch
from torch import nn

from trainers.config import ModelConfig
from trainers.errors import UserError

SHIPPED_CONFIGS = Path(__file__).parent / "model_configs"
SIGLIP_VOCABULARY = "SigLIP's T5/Gemma vocabulary"  # open_clip downloads it from storage.googleapis.com
# a Hugging Face text model's config and tokenizer files; not its weights: the CLIP weights hold the text tower's
HF_TEXT_FILES = "--include '*.json' --include '*.txt' --include '*.model'"
open_clip.add_model_config(SHIPPED_CONFIGS)


def resolve_architecture(name: str) -> str:
    """The open_clip model name for `name` (a built-in, a registered config file, or a schema name)."""
    schema, identifier = parse_model_name(name)
    if schema == "local-dir":
        return _local_dir(identifier)
    if schema == "hf-hub":
        return _hf_hub(identifier)
    path = Path(name).expanduser()
    if path.suffix == ".json":
        return _config_file(path)
    if name in open_clip.list_models():
        return name
    ours = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))
    raise UserError(f"model.name: unknown architecture {name!r}; use an open_clip name "
                    f"(open_clip.list_models(), e.g. ViT-B-32), one of ours {ours}, a path to a model "
                    "config .json, hf-hub:org/repo or local-dir:/path")


def _config_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"model.name: config file {path} does not exist")
    config = _json_file(path)
    if not isinstance(config, dict) or not all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise UserError(f"model.name: {path} is not an open_clip model config (it needs embed_dim, "
                        "vision_cfg and text_cfg)")
    open_clip.add_model_config(path)  # registered under the file's stem, as open_clip does
    return path.stem


def _json_file(path: Path) -> object:
    """A JSON file's content; a UserError (one line: the file, line and column) when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"model.name: {path} is not valid JSON ({err}); give an open_clip model config "
                        "file") from None


def _local_dir(identifier: str) -> str:
    config = Path(identifier).expanduser() / "open_clip_config.json"
    found = _json_file(config) if config.is_file() else None
    if not isinstance(found, dict) or "model_cfg" not in found:
        raise UserError(f"model.name: local-dir:{identifier} needs {config} with a model_cfg, as "
                        "open_clip writes it (plus the weights, e.g. open_clip_model.safetensors)")
    return f"local-dir:{Path(identifier).expanduser().resolve()}"


def _hf_hub(repo: str) -> str:
    try:
        open_clip.get_model_config(f"hf-hub:{repo}")  # fetched once, then read from the HF cache
    except Exception as err:  # network and hub errors come in many types; all mean the same here
        raise UserError(f"model.name: could not fetch hf-hub:{repo} ({type(err).__name__}). Without "
                        f"network access, download it elsewhere (hf download {repo} "
                        "--local-dir DIR), copy DIR here and use model.name=local-dir:DIR") from None
    return f"hf-hub:{repo}"


def model_config(name: str) -> dict:
    """open_clip's model config of `name` (embed_dim, vision_cfg, text_cfg, ...)."""
    return open_clip.get_model_config(resolve_architecture(name))


def hf_text_parts(arch: str) -> dict[str, str]:
    """What of Hugging Face `arch`'s text side loads: {"text model": hf_model_name, "tokenizer": ...} (or {})."""
    text = open_clip.get_model_config(arch)["text_cfg"]
    parts = {"text model": text.get("hf_model_name"), "tokenizer": text.get("hf_tokenizer_name")}
    if not parts["tokenizer"] and parse_model_name(arch)[0] is None and "siglip" in arch.lower():
        parts["tokenizer"] = SIGLIP_VOCABULARY  # open_clip's rule for names without one
    return {part: source for part, source in parts.items() if source}


def require_transformers(name: str) -> None:
    """Hugging Face text towers and tokenizers need `transformers` and their files (from the Hugging Face
    cache, a download, or a local directory): load them here, as every trial will, or say in one line why not."""
    arch = resolve_architecture(name)
    parts = hf_text_parts(arch)
    if not parts:
        return
    try:
        from transformers import AutoConfig  # open_clip imported it already where it is installed
    except ImportError:
        raise UserError(f"model.name: {name} uses the Hugging Face {' and '.join(parts)} "
                        f"{' / '.join(parts.values())}; install it with: pip install transformers") from None
    for part, source in parts.items():
        try:
            AutoConfig.from_pretrained(source) if part == "text model" else open_clip.get_tokenizer(arch)
        except Exception as err:  # network, hub and file errors come in many types; all mean the same here
            raise UserError(hf_unavailable(name, arch, part, source, err)) from None


def hf_unavailable(name: str, arch: str, part: str, source: str, err: Exception) -> str:
    """One line: which Hugging Face part of `name` did not load, and how to provide it offline."""
    schema, identifier = parse_model_name(arch)
    what = f"model.name: {name}: could not load the Hugging Face {part} {source} ({type(err).__name__})"
    if schema == "local-dir" and part == "tokenizer":
        return f"{what}; open_clip reads it from the directory: put its tokenizer files in {identifier}"
    if source == SIGLIP_VOCABULARY:
        return f"{what}; without network access set text_cfg.hf_tokenizer_name to a directory of its tokenizer files"
    text = open_clip.get_model_config(arch)["text_cfg"]
    keys = " and ".join(f"text_cfg.{key}" for key in ("hf_model_name", "hf_tokenizer_name")
                        if text.get(key) == source)  # where the config names it
    return (f"{what}. Without network access, download its config and tokenizer files elsewhere (hf download "
            f"{source} {HF_TEXT_FILES} --local-dir DIR), copy DIR here and set {keys} to DIR in a copy of the "
            "model config (model.name=/path/to/config.json)")


def check_model_name(name: str) -> str:
    """Validation of `model.name`: open_clip can build and tokenise it here; returns open_clip's name."""
    require_transformers(name)
    return resolve_architecture(name)


def check_pretrained(cfg: ModelConfig) -> str | None:
    """Resolve `pretrained` to a local file before any trial starts (downloading a tag if needed).
    With an hf-hub:/local-dir: name and no `pretrained`, the weights published with that name."""
    arch = check_model_name(cfg.name)
    if cfg.pretrained is None:
        return schema_weights(arch)
    path = Path(cfg.pretrained).expanduser()
    if path.is_file():
        return str(path.resolve())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if cfg.pretrained not in tags:
        raise UserError(f"model.pretrained: {cfg.pretrained!r} is neither an existing file nor an "
                        f"open_clip tag for {cfg.name} (tags: {tags or 'none'})")
    try:
        with hub_retries_unlogged():
            return open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg(arch, cfg.pretrained))
    except Exception as err:  # network errors come in many types; all mean the same to a user
        raise UserError(f"model.pretrained: could not download {cfg.name}/{cfg.pretrained} "
                        f"({type(err).__name__}). Without network access, download the weights "
                        "elsewhere and pass the file: model.pretrained=/path/to/open_clip_model.safetensors"
                        ) from None


def schema_weights(arch: str) -> str | None:
    """The weights file that comes with an hf-hub:/local-dir: name (None for other names, or none there)."""
    schema, identifier = parse_model_name(arch)
    if schema == "local-dir":
        return _find_checkpoint_in_dir(Path(identifier))
    if schema == "hf-hub":
        try:
            with hub_retries_unlogged():
                return open_clip.pretrained.download_pretrained_from_hf(identifier)
        except Exception as err:  # as for the config: one line saying how to work offline
            raise UserError(f"model.name: could not fetch the weights of hf-hub:{identifier} "
                            f"({type(err).__name__}); download them elsewhere and use local-dir:DIR") from None
    return None


@contextlib.contextmanager
def hub_retries_unlogged() -> Iterator[None]:
    """huggingface_hub logs every retry of a request it cannot make (offline: 20 lines a file, each shown
    twice, for most of a minute); the one-line UserError after them is what the user needs."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def build_clip(cfg: ModelConfig, weights: str | None = None) -> nn.Module:
    """An open_clip model of `cfg.name` (random weights, or `weights`: a local file), preprocessing
    config set as for its pretrained tag when `cfg.pretrained` is one."""
    arch = resolve_architecture(cfg.name)
    clip = open_clip.create_model(arch, load_weights=False, pretrained_text=False,  # HF text: no separate download
                                  force_preprocess_cfg=tag_preprocess(cfg, arch),
                                  device=torch.get_default_device())  # `with torch.device("meta")`: no weights
    if weights:
        open_clip.load_checkpoint(clip, weights)
    if hasattr(clip.visual, "trunk"):  # timm tower: open_clip leaves the trunk at timm's default size
        clip.visual.set_input_size(clip.visual.image_size)  # a no-op when they agree (real configs)
    return clip


def tag_preprocess(cfg: ModelConfig, arch: str) -> dict:
    """The normalisation a pretrained tag was trained with (SigLIP's differs from OpenAI's)."""
    if cfg.pretrained is None or parse_model_name(arch)[0]:
        return {}
    return open_clip.get_pretrained_cfg(arch, cfg.pretrained) or {}


def tokenizer_for(cfg: ModelConfig):
    return open_clip.get_tokenizer(resolve_architecture(cfg.name))


def quiet_open_clip(verbose: bool) -> None:
    """Without --verbose, open_clip's chatter on building a model (it logs on the root logger: the
    model identifier, its config, "no pretrained weights loaded" before we load ours) is dropped from
    the root logger's handlers; its errors are kept. Called by the entry points, which configure logging."""
    if verbose:
        return
    package = os.path.dirname(open_clip.__file__)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(package)

    for handler in logging.getLogger().handlers:
        handler.addFilter(keep)
