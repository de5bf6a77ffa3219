"""Batched decoding and crop-and-resize, on the GPU or the CPU.

JPEGs are decoded in one call per batch (nvJPEG on CUDA). Images of a batch differ in size (the store keeps
their aspect), so they are gathered into one padded float canvas and every crop is resized in a single
`roi_align` call: a bilinear resize that averages several samples per output pixel when it shrinks
(`sampling_ratio=-1`), so it does not alias.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.ops import roi_align


def as_tensors(blobs: list[bytes]) -> list[torch.Tensor]:
    with warnings.catch_warnings():  # the bytes are only read: a non-writable buffer is fine
        warnings.simplefilter("ignore", UserWarning)
        return [torch.frombuffer(blob, dtype=torch.uint8) for blob in blobs]


def decode_batch(blobs: list[bytes], device: torch.device) -> list[torch.Tensor]:
    """uint8 RGB images (3, H, W) on `device`: nvJPEG in one batched call on CUDA, one by one on the CPU."""
    data = as_tensors(blobs)
    if device.type == "cuda":
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # not all JPEG (an older single-file split with PNGs): decode on the CPU
            pass
    return [decode_image(d, mode=ImageReadMode.RGB).to(device, non_blocking=True) for d in data]


def image_sizes(images: list[torch.Tensor]) -> torch.Tensor:
    """(B, 2) float tensor of (height, width) on the CPU: no device sync."""
    return torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.float32)


def padded_canvas(images: list[torch.Tensor]) -> torch.Tensor:
    """float (B, 3, Hmax + 1, Wmax + 1) holding each image at the top left, its last row and column
    repeated once, so bilinear samples at an image's border never blend in the padding."""
    height = max(image.shape[-2] for image in images) + 1
    width = max(image.shape[-1] for image in images) + 1
    canvas = torch.zeros(len(images), 3, height, width, device=images[0].device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):  # one copy per distinct size: most stores have few
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    for (h, w), members in groups.items():
        stacked = torch.stack([images[i] for i in members]).float()
        index = torch.tensor(members, device=canvas.device)
        canvas[index, :, :h + 1, :w + 1] = F.pad(stacked, (0, 1, 0, 1), mode="replicate")
    return canvas


def crop_resize(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """float (B, 3, size, size) in [0, 255]: box i = (x0, y0, x1, y1) of image i, in pixels, resized."""
    canvas = padded_canvas(images)
    rois = torch.cat([torch.arange(len(images), dtype=torch.float32).unsqueeze(1), boxes], dim=1)
    return roi_align(canvas, rois.to(canvas.device), output_size=(size, size), aligned=True)


def centre_boxes(sizes: torch.Tensor) -> torch.Tensor:
    """The centred square of side min(H, W) of each image: resize-short-side then centre-crop in one step."""
    side = sizes.min(dim=1).values
    y0, x0 = (sizes[:, 0] - side) / 2, (sizes[:, 1] - side) / 2
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.round_().clamp_(0, 255).to(torch.uint8)


def decode_centre(blobs: list[bytes], size: int, device: torch.device) -> torch.Tensor:
    """uint8 (B, 3, size, size) on `device`: decoded, short side resized to `size`, centre-cropped."""
    images = decode_batch(blobs, device)
    return to_uint8(crop_resize(images, centre_boxes(image_sizes(images)), size))
