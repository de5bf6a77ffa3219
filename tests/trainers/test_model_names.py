"""open_clip's name schemas: local-dir: offline end to end, hf-hub: failing with how to work offline,
Hugging Face text towers without transformers."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.families import tiny_config
from trainers.architectures import SHIPPED_CONFIGS, build_clip, check_model_name
from trainers.base import write_base_checkpoint
from trainers.checkpoint import read_meta
from trainers.config import ModelConfig, TrainConfig
from trainers.data.synthetic import CLASSES, write_demo_data
from trainers.errors import UserError
from trainers.loop import RunContext, fit
from trainers.model import build_zeroshot_classifier

HALF = [0.5, 0.5, 0.5]


@pytest.fixture
def weights_file(tmp_path) -> str:
    """Weights of the tiny architecture (random, from a seed: a stand-in for published ones)."""
    torch.manual_seed(7)
    save_file({k: v.contiguous() for k, v in build_clip(ModelConfig()).state_dict().items()},
              str(tmp_path / "weights.safetensors"))
    return str(tmp_path / "weights.safetensors")


@pytest.fixture
def local_dir(tmp_path, weights_file):
    """A directory laid out as open_clip's local-dir: reads it: config JSON plus weights."""
    directory = tmp_path / "my-clip"
    directory.mkdir()
    model_cfg = json.loads((SHIPPED_CONFIGS / "soupsweep-tiny-vit.json").read_text())
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": HALF, "std": HALF}}))
    shutil.copyfile(weights_file, directory / "open_clip_model.safetensors")
    return directory


def test_local_dir_offline_end_to_end(local_dir, weights_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    saved = load_file(weights_file)
    model = build_zeroshot_classifier(ModelConfig(name=f"local-dir:{local_dir}"), CLASSES)
    for key, value in model.visual.state_dict().items():
        assert torch.equal(value, saved[f"visual.{key}"]), key
    assert model.mean.flatten().tolist() == HALF  # the directory's preprocessing config
    data = write_demo_data(tmp_path / "data", sizes={s: 8 for s in ("train", "val", "heldout", "test", "sketch")})
    cfg = TrainConfig.model_validate({
        "data": {**{s: data[s] for s in ("train", "val", "heldout", "test")}, "shift": {"sketch": data["sketch"]}},
        "model": {"name": f"local-dir:{local_dir}", "templates": "simple"}, "method": {"name": "flyp"},
        "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 0}})
    write_base_checkpoint(cfg, tmp_path / "base")
    fit(cfg, RunContext(base_dir=str(tmp_path / "base"), report=lambda m, d: d and shutil.copytree(d, tmp_path / "out")))
    assert read_meta(tmp_path / "out")["step"] == 2


def test_pretrained_file_replaces_the_local_dirs_weights(local_dir, tmp_path):
    other = build_clip(ModelConfig())  # random weights of the same architecture
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    model = build_zeroshot_classifier(ModelConfig(name=f"local-dir:{local_dir}",
                                                  pretrained=str(tmp_path / "other.safetensors")), CLASSES)
    assert torch.equal(model.visual.conv1.weight, other.visual.conv1.weight)
    with pytest.raises(UserError, match="neither an existing file nor an open_clip tag"):
        build_zeroshot_classifier(ModelConfig(name=f"local-dir:{local_dir}", pretrained="openai"), CLASSES)


def test_local_dir_without_config_says_what_it_needs(tmp_path):
    with pytest.raises(UserError, match="local-dir:.*needs .*open_clip_config.json"):
        check_model_name(f"local-dir:{tmp_path}")


def test_hf_hub_offline_says_how_to_use_local_dir(hf_offline):
    with pytest.raises(UserError, match="could not fetch hf-hub:timm/ViT-B-16-SigLIP.*model.name=local-dir:DIR"):
        check_model_name("hf-hub:timm/ViT-B-16-SigLIP")


# Run in a process where `import transformers` fails as if it were not installed (open_clip included).
WITHOUT_TRANSFORMERS = """
import sys

class NoTransformers:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "transformers":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTransformers())
from trainers.config import ModelConfig
from trainers.data.synthetic import CLASSES
from trainers.errors import UserError
from trainers.model import build_zeroshot_classifier

for name in sys.argv[1:]:
    try:
        build_zeroshot_classifier(ModelConfig(name=name), CLASSES)
    except UserError as err:
        print(err)
assert "transformers" not in sys.modules
"""


def test_hugging_face_text_tower_without_transformers_is_one_line(tmp_path):
    config = json.loads((SHIPPED_CONFIGS / "soupsweep-tiny-vit.json").read_text())
    config["text_cfg"] = {"hf_model_name": "bert-base-uncased", "hf_tokenizer_name": "bert-base-uncased"}
    (tmp_path / "hf-text.json").write_text(json.dumps(config))
    names = [str(tmp_path / "hf-text.json"), "ViT-B-16-SigLIP"]
    run = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS, *names], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("install it with: pip install transformers") for line in lines)
    assert "text model and tokenizer bert-base-uncased" in lines[0] and "tokenizer timm/ViT-B-16-SigLIP" in lines[1]


def test_hugging_face_text_model_offline_says_how_to_download_it(hf_offline, tmp_path):
    config = open_clip.get_model_config("roberta-ViT-B-32")  # text tower: the Hugging Face model roberta-base
    (tmp_path / "roberta-clip.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="could not load the Hugging Face text model roberta-base .*hf download "
                       "roberta-base --include .* --local-dir DIR.*"
                       "text_cfg.hf_model_name and text_cfg.hf_tokenizer_name"):
        check_model_name(str(tmp_path / "roberta-clip.json"))


def test_local_dir_with_a_hugging_face_tokenizer_needs_its_files(tmp_path):
    model_cfg = tiny_config("hf-text", tmp_path)  # its text model is found; open_clip reads the tokenizer
    (tmp_path / "my-clip").mkdir()               # from the local-dir: directory itself, which lacks it
    (tmp_path / "my-clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    with pytest.raises(UserError, match=f"could not load the Hugging Face tokenizer .*put its tokenizer files in "
                       f"{tmp_path / 'my-clip'}"):
        check_model_name(f"local-dir:{tmp_path / 'my-clip'}")
