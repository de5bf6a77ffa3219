"""Reading safetensors files one tensor at a time, with plain reads instead of a memory map.

`safetensors.torch.load_file` maps the whole file and copies every tensor out of the map: while a
file is open the process holds it twice (mapped pages count in its resident memory). The soup
stage streams many checkpoints and promises a memory bound, so it reads the header itself and
each tensor straight into its own buffer: loading a checkpoint costs one checkpoint, and reading
one tensor of the base costs one tensor. The format is the documented one: an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER = 100_000_000  # the safetensors library's own limit


class TensorFileError(ValueError):
    """Not a readable safetensors file (truncated, corrupt, or another format)."""


class TensorFile:
    """Random access to the tensors of one safetensors file; each read allocates only that tensor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise TensorFileError(f"{self.path} is not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER:
                raise TensorFileError(f"{self.path} is not a safetensors file (header length {length})")
            try:
                header = json.loads(f.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise TensorFileError(f"{self.path} is not a safetensors file (header is not JSON)") from None
        self.data_start = 8 + length
        self.size = self.path.stat().st_size
        header.pop("__metadata__", None)
        self.entries = header
        for name in header:
            self._check(name)

    def _check(self, name: str) -> None:
        entry = self.entries[name]
        if entry.get("dtype") not in DTYPES:
            raise TensorFileError(f"{self.path}: tensor {name} has unsupported dtype {entry.get('dtype')!r}")
        begin, end = entry["data_offsets"]
        expected = math.prod(entry["shape"]) * DTYPES[entry["dtype"]].itemsize
        if end - begin != expected or self.data_start + end > self.size:
            raise TensorFileError(f"{self.path}: tensor {name} is truncated or corrupt "
                                  f"(bytes {begin}..{end}, file has {self.size - self.data_start})")

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        begin, end = entry["data_offsets"]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            if f.readinto(memoryview(buffer.numpy())) != end - begin:
                raise TensorFileError(f"{self.path}: tensor {name} is truncated")
        return buffer.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def load(self) -> dict[str, torch.Tensor]:
        return {name: self.get(name) for name in self.entries}


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read without a memory map."""
    return TensorFile(path).load()
