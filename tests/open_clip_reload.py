"""Run as a script, in a process that never imports soupsweep: load an exported soup with open_clip
alone and write its class logits for the given images, and the text embeddings of the class names
(open_clip's tokenizer for the export, and its text tower).

usage: python open_clip_reload.py EXPORT_DIR IMAGES.safetensors OUT.safetensors
"""
import json
import sys
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def load(directory: Path, info: dict):
    """As docs/models.md says: a built-in architecture with pretrained=, else local-dir:. A timm tower at
    another image size than timm's default is resized before the weights are loaded."""
    if info["architecture"]:
        return open_clip.create_model_and_transforms(info["architecture"],
                                                     pretrained=str(directory / "open_clip_model.safetensors"))[0]
    try:
        return open_clip.create_model_and_transforms(f"local-dir:{directory}")[0]
    except RuntimeError:  # open_clip loads the weights before it resizes a timm trunk
        model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
        model.visual.set_input_size(model.visual.image_size)
        open_clip.load_checkpoint(model, str(directory / "open_clip_model.safetensors"))
        return model


def main(directory: str, images: str, out: str) -> None:
    directory = Path(directory)
    info = json.loads((directory / "soupsweep.json").read_text())
    model = load(directory, info).eval()
    tokenizer = open_clip.get_tokenizer(info["architecture"] or f"local-dir:{directory}")
    head = load_file(str(directory / "zeroshot_head.safetensors"))
    pre = model.visual.preprocess_cfg
    x = load_file(images)["images"]
    x = (x - torch.tensor(pre["mean"]).view(1, 3, 1, 1)) / torch.tensor(pre["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.normalize(model.encode_image(x), dim=-1) @ head["weight"].T + head["bias"]
        text = F.normalize(model.encode_text(tokenizer(info["classes"])), dim=-1)
    ours = [m for m in sys.modules if m.split(".")[0] in ("trainers", "soup", "sweep")]
    assert not ours, f"soupsweep was imported: {ours}"
    save_file({"logits": logits.contiguous(), "text": text.contiguous()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
