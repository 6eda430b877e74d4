"""Building a model for timing: random weights, on the device, fast.

Timing does not depend on weight values, so models are built on the meta device, materialized with
`to_empty` and filled with cheap scaled random values (never zeros); see :func:`build_for_timing`.
A model whose weights alone would not fit in the device's free memory is refused as out of memory
before anything is allocated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from suite.zoo import ModelSpec, build_model

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class BuiltModel:
    model: nn.Module
    build_s: float
    method: str
    params: int


def build_for_timing(spec: ModelSpec, img_size: int, mixer_rule: str, device: torch.device, seed: int = 0,
                     free_bytes: Callable[[torch.device], int | None] | None = None) -> BuiltModel:
    """Build `spec` on `device` with random weights, fast.

    timm's random init of a 900M-parameter model takes minutes on two CPU cores; timing does not
    depend on weight values, so the model is built on the meta device, materialized with
    `to_empty` and filled by :func:`fill_random_`. A model with buffers other than BatchNorm
    statistics (e.g. index tables computed at init) is built the ordinary way instead.
    `free_bytes` says how much memory the device has free (default :func:`free_memory_bytes`).
    """
    start = time.perf_counter()
    meta = build_model(spec, img_size=img_size, mixer_rule=mixer_rule, device="meta")
    params = sum(p.numel() for p in meta.parameters())
    check_fits(meta, (free_bytes or free_memory_bytes)(device))
    if all(name.rsplit(".", 1)[-1] in _BN_BUFFERS for name, _ in meta.named_buffers()):
        model = meta.to_empty(device=device)
        fill_random_(model, seed)
        method = "meta+to_empty+scaled-uniform"
    else:
        del meta
        model = build_model(spec, img_size=img_size, mixer_rule=mixer_rule, device=device)
        method = "timm-init"
    return BuiltModel(model.eval(), time.perf_counter() - start, method, params)


@torch.no_grad()
def fill_random_(model: nn.Module, seed: int = 0) -> None:
    """Fill every parameter with scaled uniform noise cut from one random pool (fast, never zero).

    Matrices and kernels get variance 1/fan_in (activations keep their scale through deep models,
    so no inf/NaN or denormals skew the timing); biases get small values; other vectors (norm
    gains, layer scales) get values near 1. BatchNorm statistics get mean 0 and variance 1.
    """
    params = list(model.parameters())
    if not params:
        return
    device = params[0].device
    chunk = 1 << 22
    generator = torch.Generator(device=device).manual_seed(seed)
    pool = torch.empty(2 * chunk, device=device).uniform_(-1.0, 1.0, generator=generator)
    offset = 0
    for name, param in model.named_parameters():
        flat = param.view(-1)
        if param.ndim >= 2:
            scale, shift = math.sqrt(3.0 / max(1, param[0].numel())), 0.0
        elif name.endswith("bias"):
            scale, shift = 0.02, 0.0
        else:
            scale, shift = 0.1, 1.0
        for start in range(0, flat.numel(), chunk):
            piece = flat[start:start + chunk]
            source = pool[offset:offset + piece.numel()].to(piece.dtype)
            torch.mul(source, scale, out=piece)
            if shift:
                piece.add_(shift)
            offset = (offset + 7919) % chunk
    for name, buffer in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_var":
            buffer.fill_(1.0)
        elif leaf in ("running_mean", "num_batches_tracked"):
            buffer.zero_()


def check_fits(meta_model: nn.Module, free: int | None) -> None:
    """Refuse (as out-of-memory) a model whose fp32 weights alone exceed 90% of `free` bytes."""
    needed = sum(p.numel() * p.element_size() for p in meta_model.parameters())
    if free is not None and needed > 0.9 * free:
        raise MemoryError(f"weights need {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (CUDA: mem_get_info; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
