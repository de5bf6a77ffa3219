"""Reading weights: our safetensors reader, PyTorch files loaded weights-only, whole CLIP state dicts."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from soup.inputs.weights import Converter, UnreadableWeights, read_weights
from soup.inputs.tensorfile import TensorFile, TensorFileError, read_tensors
from trainers.checkpoint import WEIGHTS, load_weights, read_meta
from trainers.config import ModelConfig
from trainers.model import state_checksum, zeroshot_classifier_and_clip


def test_tensorfile_reads_what_safetensors_wrote(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(6).view(2, 3), "i32": torch.tensor([7], dtype=torch.int32),
               "flags": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3)}
    save_file(tensors, tmp_path / "w.safetensors", metadata={"format": "pt"})
    ours, theirs = read_tensors(tmp_path / "w.safetensors"), load_file(tmp_path / "w.safetensors")
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape and torch.equal(ours[key], value)
    assert torch.equal(TensorFile(tmp_path / "w.safetensors").get("i64"), tensors["i64"])


def test_tensorfile_refuses_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TensorFileError, match="not a safetensors file"):
        TensorFile(tmp_path / "junk.safetensors")
    save_file({"w": torch.randn(100)}, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-40])
    with pytest.raises(TensorFileError, match="tensor w is truncated"):
        TensorFile(tmp_path / "cut.safetensors")


def test_pytorch_state_dicts_are_loaded_weights_only_and_normalised(soup_inputs, tmp_path):
    _, _, ingredients = soup_inputs
    state = load_weights(ingredients[0].checkpoint)
    # what DDP + torch.compile + open_clip's training script save: prefixes, wrapped with the epoch
    torch.save({"epoch": 3, "state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}},
               tmp_path / "trained-elsewhere.pt")
    weights = read_weights(str(tmp_path / "trained-elsewhere.pt"), tmp_path / "work")
    assert weights.meta is None and set(weights.state) == set(state)
    assert all(torch.equal(weights.state[k], v) for k, v in state.items())
    assert weights.file.parent == tmp_path / "work" / "ingredients"  # a clean copy the soups stream from
    assert set(read_tensors(weights.file)) == set(state)
    # our own checkpoint directory is read where it is
    own = read_weights(ingredients[0].checkpoint, tmp_path / "work")
    assert own.file == own.file.parent / WEIGHTS and own.meta["trial_id"] == "trial1"


class NotATensor:
    pass


def test_files_that_pickle_objects_or_are_corrupt_are_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(UnreadableWeights, match=r"holds code \(.*NotATensor\) .*refused unread"):
        read_weights(str(tmp_path / "pickled.pt"), tmp_path)
    (tmp_path / "corrupt.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(UnreadableWeights, match="not a readable PyTorch file"):
        read_weights(str(tmp_path / "corrupt.pt"), tmp_path)
    torch.save({"lr": 0.1, "epoch": 3}, tmp_path / "no-weights.pt")
    with pytest.raises(UnreadableWeights, match="holds no state dict of tensors"):
        read_weights(str(tmp_path / "no-weights.pt"), tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnreadableWeights, match="not a checkpoint directory, .safetensors file or PyTorch file"):
        read_weights(str(tmp_path / "notes.txt"), tmp_path)


def test_a_whole_clip_state_dict_gets_the_zero_shot_head_of_its_own_text_tower(soup_inputs, pretrained_file,
                                                                               tmp_path):
    cfg, base_dir, _ = soup_inputs
    clip_state = load_file(pretrained_file)  # the stand-in pretrained CLIP: both towers, no head
    torch.save(clip_state, tmp_path / "clip.pt")
    converter = Converter(ModelConfig(pretrained=pretrained_file), read_meta(base_dir)["classes"])
    weights = read_weights(str(tmp_path / "clip.pt"), tmp_path, converter)
    # exactly the sweep's base: same image tower, same zero-shot head
    assert state_checksum(weights.state) == read_meta(base_dir)["base_checksum"]
    with pytest.raises(UnreadableWeights, match="needs the model config and the classes"):
        read_weights(str(tmp_path / "clip.pt"), tmp_path)


def test_the_zero_shot_head_of_a_whole_clip_uses_the_configured_prompts(soup_inputs, pretrained_file, tmp_path):
    _, base_dir, _ = soup_inputs
    classes = read_meta(base_dir)["classes"]
    torch.save(load_file(pretrained_file), tmp_path / "clip.pt")
    custom = ModelConfig(pretrained=pretrained_file, custom_templates=["a blurry photo of a {}."],
                         class_names={classes[0]: "widget"}, class_descriptions={classes[1]: ["a shiny round part."]})
    weights = read_weights(str(tmp_path / "clip.pt"), tmp_path, Converter(custom, classes))
    expected, _ = zeroshot_classifier_and_clip(custom, classes)  # how a sweep's base builds its head
    assert torch.allclose(weights.state["head.weight"], expected.head.weight, atol=1e-6)
    plain = read_weights(str(tmp_path / "clip.pt"), tmp_path / "plain", Converter(ModelConfig(pretrained=pretrained_file),
                                                                                 classes))
    assert not torch.allclose(plain.state["head.weight"], expected.head.weight, atol=1e-4)
