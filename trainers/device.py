"""Choosing the device, in one place: `auto` is the GPU when there is one, else the CPU."""
from __future__ import annotations

import torch

from trainers.errors import UserError


def resolve_device(name: str = "auto", what: str = "device") -> torch.device:
    """`auto`, cpu, cuda or cuda:N as a torch.device; a UserError naming `what` (before anything is
    written) for anything else, or for a GPU this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if name != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise UserError(f"{what} {name}: use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if kind == "cuda" else 0
    if kind == "cuda" and int(index or 0) >= count:
        seen = f"only cuda:0..cuda:{count - 1} are visible" if count else "no CUDA GPU is visible"
        raise UserError(f"{what} {name}: {seen}; use {what} auto or cpu")
    return torch.device(name)
