"""The one exception type for mistakes a user can fix (bad config, missing path, unknown experiment).

Entry points catch it and print one line instead of a traceback; everything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import re


class UserError(Exception):
    """A problem in what the user gave us; the message names the problem and the fix."""


def refused_pickle(path: object, err: Exception) -> str | None:
    """The one line for a PyTorch file that torch's weights-only loader refused because its pickle names
    code (a function or class: `GLOBAL module.name`), which it never imports nor runs; None for other errors."""
    found = re.search(r"GLOBAL (\S+)", str(err))
    if not found:
        return None
    return (f"{path} holds code ({found.group(1)}) besides tensors and was refused unread (PyTorch files are "
            "loaded weights-only, nothing in them is run); save only the weights: "
            "torch.save(model.state_dict(), file) or a .safetensors file")
