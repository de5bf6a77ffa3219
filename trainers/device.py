"""Choosing the device, in one place: `auto` is the GPU when there is one, else the CPU."""
from __future__ import annotations

import torch

from trainers.errors import UserError


def resolve_device(name: str = "auto", what: str = "device") -> torch.device:
    """`auto`, cpu, cuda or cuda:N as a torch.device; a UserError naming `what` for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"{what} {name!r}: use auto, cpu, cuda or cuda:N") from None
