"""Marks shared by the test files."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def needs_cuda(test: Callable) -> Callable:
    """A test that needs a CUDA device: marked `gpu` (`pytest -m gpu` runs them all, as the GPU check
    does) and skipped cleanly where torch sees no GPU."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))
