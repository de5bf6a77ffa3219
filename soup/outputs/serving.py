"""What the served soup takes and gives: encoded images in a DataFrame column, class names and probabilities.

`mlflow models serve` hands a JSON request's `dataframe_split`/`dataframe_records` to the model as a
pandas DataFrame; binary data travels in JSON as base64 strings, so a cell may be PNG/JPEG bytes or
their base64 text. Images go through the model's own evaluation preprocessing (short side resized to
the model's input size, centre crop; normalisation inside the classifier).
"""
from __future__ import annotations

import base64
import binascii

import numpy as np
import pandas as pd
import torch

from trainers.data.decode import decode_centre

IMAGE_COLUMN = "image"


def encoded_images(frame: pd.DataFrame, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) from the `image` column (or the only column) of encoded images."""
    if IMAGE_COLUMN in frame.columns:
        column = frame[IMAGE_COLUMN]
    elif len(frame.columns) == 1:
        column = frame.iloc[:, 0]
    else:
        raise ValueError(f"give the encoded images in a column named {IMAGE_COLUMN!r} "
                         f"(got columns {list(frame.columns)})")
    return decode_centre([_as_bytes(value) for value in column], size, torch.device("cpu"))


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("an image cell is text but not base64: send PNG/JPEG bytes, base64-encoded") from None
    raise ValueError(f"an image cell holds {type(value).__name__}: send PNG/JPEG bytes or their base64 text")


def uint8_images(array) -> torch.Tensor:
    """Image tensors (N, 3, S, S): uint8, or integers in [0, 255] as JSON `instances` arrive."""
    images = torch.as_tensor(np.asarray(array))
    if images.dtype != torch.uint8:
        if images.dtype.is_floating_point or images.numel() and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"give uint8 images (N, 3, S, S), not {images.dtype}")
        images = images.to(torch.uint8)
    return images


def class_predictions(logits: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """Per row: the predicted class name and every class's probability (softmax of the logits)."""
    probabilities = logits.float().softmax(-1)
    return pd.DataFrame({"class": [classes[i] for i in probabilities.argmax(-1).tolist()],
                         "probabilities": probabilities.tolist()})
