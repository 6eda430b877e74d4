"""Time one callable on one device, the way a careful benchmark must.

Why each step is here:

- Warm-up first: cuDNN autotuning, kernel selection, lazy allocation and torch.compile all happen
  on the first calls at a given shape, so those calls are run and thrown away.
- Synchronisation: CUDA launches are asynchronous, so a host clock around `fn()` measures the
  launch, not the work. On CUDA each step is bracketed by CUDA events recorded on the stream and
  the host synchronises once after the timed loop; on CPU a monotonic clock (`perf_counter`) is
  read around each call.
- Repeats and a minimum time: a step is timed at least `repeats` times and until `min_time_s` has
  passed, and no longer than `max_time_s` (with a floor of `min_repeats`), so fast models get many
  samples and slow models on a CPU stay bounded.
- Robust statistics: the median step time (not the mean) with p10/p90 and the interquartile range,
  so one hiccup of a shared machine does not move the figure.

:func:`measure_peak_tflops` times one large matmul the same way; its fastest step is the "hardware
peak" the throughput harness divides by for model-FLOPs utilization.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

#: Precisions the suite understands: what the weights/inputs are and whether TF32 is allowed.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
LOW_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Timing:
    """Step times (seconds) of one measurement and the statistics a row reports."""

    times_s: tuple[float, ...]
    warmup_steps: int

    @property
    def steps(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)

    def quantile_s(self, q: float) -> float:
        """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
        ordered = sorted(self.times_s)
        pos = q * (len(ordered) - 1)
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    @property
    def p10_s(self) -> float:
        return self.quantile_s(0.10)

    @property
    def p90_s(self) -> float:
        return self.quantile_s(0.90)

    @property
    def iqr_s(self) -> float:
        return self.quantile_s(0.75) - self.quantile_s(0.25)

    @property
    def total_s(self) -> float:
        return sum(self.times_s)


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], object], device: str | torch.device = "cpu", *, warmup: int = 10,
                  repeats: int = 50, min_time_s: float = 0.0, max_time_s: float | None = None,
                  min_repeats: int = 3) -> Timing:
    """Run `fn` `warmup` times untimed, then time single calls until the stopping rule holds.

    Timed steps continue while fewer than `repeats` steps were timed or less than `min_time_s` was
    spent, and stop early once `max_time_s` is spent (but never before `min_repeats` steps).
    """
    device = torch.device(device)
    if repeats < 1 or min_repeats < 1 or warmup < 0:
        raise ValueError("repeats and min_repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        times = _time_cuda(fn, device, repeats, min_time_s, max_time_s, min_repeats)
    else:
        times = _time_host(fn, repeats, min_time_s, max_time_s, min_repeats)
    return Timing(tuple(times), warmup)


def _keep_going(count: int, spent: float, repeats: int, min_time_s: float, max_time_s: float | None,
                min_repeats: int) -> bool:
    if count < min_repeats:
        return True
    if max_time_s is not None and spent >= max_time_s:
        return False
    return count < repeats or spent < min_time_s


def _time_host(fn: Callable[[], object], repeats: int, min_time_s: float, max_time_s: float | None,
               min_repeats: int) -> list[float]:
    times: list[float] = []
    spent = 0.0
    while _keep_going(len(times), spent, repeats, min_time_s, max_time_s, min_repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return times


def _time_cuda(fn: Callable[[], object], device: torch.device, repeats: int, min_time_s: float,
               max_time_s: float | None, min_repeats: int) -> list[float]:
    """Event pairs around each step; the host synchronises only between chunks of steps.

    The first chunk is `max(repeats, min_repeats)` steps with no host sync inside; further chunks
    (only when `min_time_s` is not yet reached) are sized from the median seen so far.
    """
    times: list[float] = []
    chunk = max(repeats, min_repeats)
    with torch.cuda.device(device):
        while True:
            pairs = []
            for _ in range(chunk):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                pairs.append((start, end))
            torch.cuda.synchronize(device)
            times.extend(start.elapsed_time(end) / 1000.0 for start, end in pairs)
            spent = sum(times)
            if not _keep_going(len(times), spent, repeats, min_time_s, max_time_s, min_repeats):
                return times
            step = max(statistics.median(times), 1e-6)
            wanted = min_time_s - spent
            if max_time_s is not None:
                wanted = min(wanted, max_time_s - spent)
            chunk = max(1, min(10_000, int(wanted / step) + 1))


@contextlib.contextmanager
def precision_flags(precision: str, device: torch.device) -> Iterator[bool]:
    """Set TF32 explicitly for the run (on for 'tf32', off otherwise) and restore it afterwards.

    Yields whether TF32 is in effect, which every row records: TF32 is never left to a default.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    allow = precision == "tf32" and device.type == "cuda"
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield allow
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def matmul_size(device: torch.device) -> int:
    """Side of the square matmul used for the peak: big enough to saturate the device."""
    return 8192 if device.type == "cuda" else 2048


def measure_peak_tflops(device: str | torch.device, precision: str, *, size: int | None = None,
                        warmup: int | None = None, repeats: int | None = None, fresh: bool = False) -> float:
    """Achievable dense-matmul TFLOP/s of `device` at `precision`, measured (and cached per process).

    fp32 runs with TF32 off, tf32 with it on, bf16/fp16 multiply tensors of that dtype. The inputs
    are random normal values (never zeros: some hardware is faster on zeros). The fastest timed
    step gives the figure: a peak is an upper bound, and contention on a shared machine only ever
    slows a step down. `fresh=True` measures again instead of reusing this process's figure.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    n = size or matmul_size(device)
    if warmup is None:
        warmup = 5 if device.type == "cuda" else 3
    if repeats is None:
        repeats = 20 if device.type == "cuda" else 5
    measure = _peak_cached.__wrapped__ if fresh else _peak_cached
    return measure(str(device), precision, n, warmup, repeats)



@functools.lru_cache(maxsize=32)
def _peak_cached(device_name: str, precision: str, n: int, warmup: int, repeats: int) -> float:
    device = torch.device(device_name)
    dtype = LOW_PRECISION_DTYPES.get(precision, torch.float32)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    out = torch.empty(n, n, device=device, dtype=dtype)
    with precision_flags(precision, device), torch.inference_mode():
        timing = time_callable(lambda: torch.matmul(a, b, out=out), device, warmup=warmup, repeats=repeats)
    return 2.0 * n**3 / timing.min_s / 1e12
