"""Fixtures of the GPU tests (marked `gpu`, run by bench/gpu_check.sh): each test asks for `cuda`, which skips
it with a reason where torch sees no CUDA device, so the whole directory passes (as skips) on a CPU."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False")
    return torch.device("cuda")


@pytest.fixture
def exact_fp32(cuda):
    """Plain fp32 matrix products and convolutions (no TF32) while a test compares the GPU's numbers with
    the CPU's: TF32 rounds inputs to 10 bits of mantissa, a difference of the hardware, not of our code."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield cuda
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
