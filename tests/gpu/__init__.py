"""Tests of the CUDA paths, marked `gpu`; bench/gpu_check.sh runs them on a GPU machine."""
import pytest
import torch

# Every module here: `pytestmark = [pytest.mark.gpu, NEEDS_CUDA]`. A skip mark is read before any fixture is
# built, so on a CPU the session fixtures (generated data, pretrained weights) are not made for nothing.
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch sees none")
