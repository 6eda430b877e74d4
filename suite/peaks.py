"""The device's matmul peak, measured and from the datasheet: what model-FLOPs utilization divides by.

Two ways of measuring, chosen by the preset:

- `sustained` (GPU): a square matmul warmed up for at least a second, then timed for at least a
  second; the figure is the median step. A burst (the fastest of a few products on a cold GPU)
  reads boost clocks that an H100/H200 does not hold under sustained load, which would make every
  MFU look low. SM clock, temperature and power during the timed second are recorded with it.
- `burst` (CPU): the fastest of a few products after a short warm-up. On a shared CPU contention
  only ever slows a step down, so the fastest step is the closest to what the hardware can do;
  the throughput harness re-measures it before each model and keeps the largest.

The datasheet's dense peak of known GPUs is kept beside the measured one, so MFU reads both ways.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from suite.telemetry import NullTelemetry, Telemetry
from suite.timing import LOW_PRECISION_DTYPES, Clock, TimingRules, precision_flags, time_steps, warm_up

#: Dense (no sparsity) tensor-core / FP32 peaks in TFLOP/s from NVIDIA's datasheets, matched
#: against torch.cuda.get_device_name() in this order (the more specific names first).
#: fp16 equals bf16 on these parts; tf32 is the dense TF32 tensor-core figure.
DATASHEET_PEAKS: tuple[tuple[str, dict[str, float], str], ...] = (
    (r"H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, "NVIDIA H200 NVL datasheet"),
    (r"H200", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}, "NVIDIA H200 SXM datasheet"),
    (r"H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, "NVIDIA H100 NVL datasheet"),
    (r"H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0}, "NVIDIA H100 PCIe datasheet"),
    (r"H100", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}, "NVIDIA H100 SXM datasheet"),
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, "NVIDIA A100 datasheet"),
    (r"L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}, "NVIDIA L40S datasheet"),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}, "NVIDIA L4 datasheet"),
    (r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}, "NVIDIA A10 datasheet"),
)

#: Names a user may give `--dry-run --peak-of` instead of a device, mapped to a device name above.
NAMED_DEVICES = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200", "a100": "NVIDIA A100-SXM4-80GB",
                 "l40s": "NVIDIA L40S", "l4": "NVIDIA L4", "a10": "NVIDIA A10"}

PEAK_RULES = ("sustained", "burst")


def datasheet_peak(device_name: str, precision: str) -> tuple[float, str] | None:
    """The datasheet's dense TFLOP/s of a known GPU at `precision`, with its source; None if unknown."""
    for pattern, peaks, source in DATASHEET_PEAKS:
        if re.search(pattern, device_name or "") and precision in peaks:
            return peaks[precision], source
    return None


@dataclass(frozen=True)
class Peak:
    """A measured matmul peak and the conditions it was measured in (all written into every row)."""

    tflops: float
    precision: str
    size: int
    method: str
    steps: int
    seconds: float
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None

    def columns(self) -> dict[str, Any]:
        return {"peak_tflops": self.tflops, "peak_method": self.method, "peak_sm_clock_mhz": self.sm_clock_mhz,
                "peak_temperature_c": self.temperature_c, "peak_power_w": self.power_w}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_size(device: torch.device) -> int:
    """Side of the square matmul used for the peak: big enough to saturate the device."""
    return 8192 if device.type == "cuda" else 2048


def peak_rules(rule: str, device: torch.device) -> TimingRules:
    """How the peak matmul is timed under each rule."""
    if rule == "sustained":
        return TimingRules(warmup_steps=5, warmup_s=1.0, min_steps=20, min_time_s=1.0)
    if rule == "burst":
        return TimingRules(warmup_steps=3 if device.type == "cpu" else 5, min_steps=5 if device.type == "cpu" else 20)
    raise ValueError(f"peak rule must be one of {PEAK_RULES}, got {rule!r}")


def measure_peak(device: torch.device, precision: str, clock: Clock, *, rule: str = "burst",
                 telemetry: Telemetry | None = None, size: int | None = None) -> Peak:
    """Dense-matmul TFLOP/s of `device` at `precision` under `rule` (see the module docstring).

    fp32 runs with TF32 off, tf32 with it on, bf16/fp16 multiply tensors of that dtype. The inputs
    are random normal values, never zeros (some hardware is faster on zeros).
    """
    device = torch.device(device)
    n = size or matmul_size(device)
    rules = peak_rules(rule, device)
    dtype = LOW_PRECISION_DTYPES.get(precision, torch.float32)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    out = torch.empty(n, n, device=device, dtype=dtype)
    telemetry = telemetry or NullTelemetry()
    def product() -> object:
        return torch.matmul(a, b, out=out)

    with precision_flags(precision, device), torch.inference_mode():
        warm = warm_up(product, clock, rules)
        with telemetry.window() as reading:
            measurement = time_steps(product, clock, rules, estimate_s=warm.last_step_s, warmup=warm)
    step = measurement.median_s if rule == "sustained" else measurement.min_s
    what = "median" if rule == "sustained" else "fastest"
    method = (f"{rule}: {what} of {measurement.steps} {n}^3 {precision} matmuls over {measurement.total_s:.2f} s "
              f"after {measurement.warmup_s:.2f} s warm-up")
    result = reading.result()
    return Peak(2.0 * n**3 / step / 1e12, precision, n, method, measurement.steps, measurement.total_s,
                result.sm_clock_mhz, result.temperature_c, result.power_w)
