"""Time one callable on one device, the way a careful benchmark must.

Why each step is here:

- Warm-up by steps *and* by time: cuDNN autotuning, kernel selection, lazy allocation and
  torch.compile all happen on the first calls at a given shape, and GPU clocks ramp up under load,
  so at least `warmup_steps` calls and at least `warmup_s` seconds are run and thrown away. The
  first call is kept apart (`first_step_s`): it is where compilation and autotuning go.
- Synchronisation: CUDA launches are asynchronous, so a host clock around `fn()` measures the
  launch, not the work. :class:`CudaEventClock` brackets each step with CUDA events and the host
  synchronises once per chunk of steps; :class:`HostClock` reads a monotonic clock around each
  call (CPU); :class:`SyncedHostClock` synchronises after every call (latency as a caller sees it).
- The clock is passed in, so the loop is tested on the CPU with a fake clock whose step time
  follows MACs over a peak, and a dry run can play the same rules against a model of the device.
- Repeats, a minimum and a maximum time: at least `min_steps` steps and `min_time_s` seconds are
  timed, no more than `max_time_s` (or what is left of a budget), never fewer than `floor_steps`.
  Chunks are sized from the step time seen so far (the first from the warm-up's steps), so a
  fast model gets many samples and a slow one stays within its time.
- Robust statistics: the median step time (not the mean) with p10/p90/p99 and the interquartile
  range; a :class:`Measurement` knows its own spread and says when it is too noisy to trust
  (IQR over median above 10% or 25%, torch.utils.benchmark's thresholds).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

#: Precisions the suite understands: what the weights/inputs are and whether TF32 is allowed.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
LOW_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: IQR / median above which a measurement is flagged, as torch.utils.benchmark's Measurement does.
NOISY_IQR = 0.10
VERY_NOISY_IQR = 0.25


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------

def quantile(values: tuple[float, ...] | list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Measurement:
    """Step times (seconds) of one measurement, how it was warmed up, and its statistics."""

    times_s: tuple[float, ...]
    warmup_steps: int = 0
    warmup_s: float = 0.0
    first_step_s: float | None = None

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
        return quantile(self.times_s, q)

    @property
    def p10_s(self) -> float:
        return self.quantile_s(0.10)

    @property
    def p90_s(self) -> float:
        return self.quantile_s(0.90)

    @property
    def p99_s(self) -> float:
        return self.quantile_s(0.99)

    @property
    def iqr_s(self) -> float:
        return self.quantile_s(0.75) - self.quantile_s(0.25)

    @property
    def total_s(self) -> float:
        return sum(self.times_s)

    @property
    def iqr_rel(self) -> float:
        """The interquartile range as a fraction of the median."""
        return self.iqr_s / self.median_s if self.median_s > 0 else math.inf

    @property
    def noise(self) -> str:
        """'ok', 'noisy' (IQR over 10% of the median) or 'very noisy' (over 25%)."""
        if self.iqr_rel > VERY_NOISY_IQR:
            return "very noisy"
        if self.iqr_rel > NOISY_IQR:
            return "noisy"
        return "ok"

    def __str__(self) -> str:
        text = (f"median {self.median_s * 1e3:.3f} ms, IQR {self.iqr_s * 1e3:.3f} ms "
                f"({100 * self.iqr_rel:.1f}%), {self.steps} steps after {self.warmup_steps} warm-up")
        return text if self.noise == "ok" else f"{text}; {self.noise}: the spread is too wide to trust"


# --------------------------------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------------------------------

class Clock(Protocol):
    """Runs `steps` calls of `fn` and returns each one's duration in seconds, all work finished.

    `between`, if given, is called before each step outside the timed bracket (a training step's
    `zero_grad`, which is bookkeeping, not the step)."""

    name: str

    def run(self, fn: Callable[[], object], steps: int,
            between: Callable[[], object] | None = None) -> list[float]: ...


class HostClock:
    """A monotonic host clock around each call: exact for work that runs on the host (CPU)."""

    name = "perf_counter"

    def run(self, fn: Callable[[], object], steps: int, between: Callable[[], object] | None = None) -> list[float]:
        times = []
        for _ in range(steps):
            if between is not None:
                between()
            start = time.perf_counter()
            fn()
            self.finish()
            times.append(time.perf_counter() - start)
        return times

    def finish(self) -> None:
        """What a step's end waits for inside the timed bracket (nothing: the host work is done)."""


class SyncedHostClock(HostClock):
    """The host clock around each call followed by a device synchronisation: latency as a caller sees it."""

    name = "perf_counter+synchronize"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def finish(self) -> None:
        synchronize(self.device)


class CudaEventClock:
    """CUDA event pairs around each step on the device's current stream; one host sync per chunk."""

    name = "cuda-events"

    def __init__(self, device: torch.device, cuda: Any = torch.cuda) -> None:
        self.device, self.cuda = torch.device(device), cuda

    def run(self, fn: Callable[[], object], steps: int, between: Callable[[], object] | None = None) -> list[float]:
        """Events are recorded on the current stream of `device`, inside its context (`cuda` is
        torch.cuda, or a fake that records the wiring in tests)."""
        cuda = self.cuda
        with cuda.device(self.device):
            stream = cuda.current_stream(self.device)
            pairs = []
            for _ in range(steps):
                if between is not None:
                    between()
                start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
                start.record(stream)
                fn()
                end.record(stream)
                pairs.append((start, end))
            cuda.synchronize(self.device)
        return [start.elapsed_time(end) / 1000.0 for start, end in pairs]


def default_clock(device: str | torch.device) -> Clock:
    """CUDA events on a GPU, the host clock on a CPU."""
    device = torch.device(device)
    return CudaEventClock(device) if device.type == "cuda" else HostClock()


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# The timing loop
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimingRules:
    """How long to warm up and to time one callable (see the module docstring)."""

    warmup_steps: int = 1
    warmup_s: float = 0.0
    min_steps: int = 5
    min_time_s: float = 0.0
    max_time_s: float | None = None
    floor_steps: int = 3
    max_chunk: int = 10_000

    def __post_init__(self) -> None:
        if self.min_steps < 1 or self.floor_steps < 1 or self.warmup_steps < 0:
            raise ValueError("min_steps and floor_steps must be >= 1 and warmup_steps >= 0")
        if self.warmup_s < 0 or self.min_time_s < 0 or (self.max_time_s is not None and self.max_time_s < 0):
            raise ValueError("times must be >= 0")


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up did: steps, seconds (the first step included) and the first step alone."""

    steps: int
    seconds: float
    first_step_s: float | None
    last_step_s: float | None


def warm_up(fn: Callable[[], object], clock: Clock, rules: TimingRules, budget_s: float | None = None,
            between: Callable[[], object] | None = None) -> WarmUp:
    """Run at least `warmup_steps` calls and at least `warmup_s` seconds after the first call.

    The first call (compilation, autotuning) is timed alone and does not count towards
    `warmup_s`. With a budget, the warm-up stops early once what is left would not hold
    `floor_steps` timed steps, but it always runs the first call.
    """
    if rules.warmup_steps == 0 and rules.warmup_s == 0:
        return WarmUp(0, 0.0, None, None)
    first = clock.run(fn, 1, between)[0]
    steps, after_first, last = 1, 0.0, first
    while steps < rules.warmup_steps or after_first < rules.warmup_s:
        if budget_s is not None and first + after_first + rules.floor_steps * last >= budget_s:
            break
        want = max(rules.warmup_steps - steps, math.ceil((rules.warmup_s - after_first) / max(last, 1e-9)))
        if budget_s is not None:
            room = budget_s - first - after_first - rules.floor_steps * last
            want = min(want, max(1, int(room / max(last, 1e-9))))
        times = clock.run(fn, max(1, min(want, rules.max_chunk)), between)
        steps += len(times)
        after_first += sum(times)
        last = statistics.median(times)
    return WarmUp(steps, first + after_first, first, last)


def time_steps(fn: Callable[[], object], clock: Clock, rules: TimingRules, *, budget_s: float | None = None,
               estimate_s: float | None = None, warmup: WarmUp | None = None,
               between: Callable[[], object] | None = None) -> Measurement:
    """Time chunks of calls until the rules hold; chunk sizes come from the step time seen so far.

    Timing goes on while fewer than `min_steps` steps or less than `min_time_s` were timed, and
    stops once `max_time_s` or the budget is spent, but never before `floor_steps` steps.
    `estimate_s` (a step time from the warm-up) sizes the first chunk; without one, one step is
    timed first to size the rest.
    """
    limit = rules.max_time_s
    if budget_s is not None:
        limit = budget_s if limit is None else min(limit, budget_s)
    times: list[float] = []
    step = estimate_s
    while _keep_going(len(times), sum(times), rules, limit):
        if step is None:
            chunk = 1
        else:
            spent = sum(times)
            want = max(rules.min_steps - len(times), math.ceil((rules.min_time_s - spent) / max(step, 1e-9)), 1)
            if limit is not None:
                allowed = int((limit - spent) / max(step, 1e-9))
                want = min(want, max(allowed, rules.floor_steps - len(times), 1))
            chunk = max(1, min(want, rules.max_chunk))
        times.extend(clock.run(fn, chunk, between))
        step = statistics.median(times)
    return Measurement(tuple(times), warmup.steps if warmup else 0, warmup.seconds if warmup else 0.0,
                       warmup.first_step_s if warmup else None)


def _keep_going(count: int, spent: float, rules: TimingRules, limit: float | None) -> bool:
    if count < rules.floor_steps:
        return True
    if limit is not None and spent >= limit:
        return False
    return count < rules.min_steps or spent < rules.min_time_s


def time_callable(fn: Callable[[], object], clock: Clock, rules: TimingRules = TimingRules(), *,
                  budget_s: float | None = None, between: Callable[[], object] | None = None) -> Measurement:
    """Warm up, then time: :func:`warm_up` followed by :func:`time_steps` within one budget."""
    warm = warm_up(fn, clock, rules, budget_s, between)
    left = None if budget_s is None else max(0.0, budget_s - warm.seconds)
    return time_steps(fn, clock, rules, budget_s=left, estimate_s=warm.last_step_s, warmup=warm, between=between)


class ConstantClock:
    """A clock that runs nothing and says every step took `step_s` (the first `first_step_s`).

    A dry run plays the timing rules against it to estimate how long a measurement will take.
    """

    name = "model"

    def __init__(self, step_s: float, first_step_s: float | None = None) -> None:
        self.step_s, self.first_step_s, self.calls = step_s, first_step_s, 0

    def run(self, fn: Callable[[], object], steps: int, between: Callable[[], object] | None = None) -> list[float]:
        times = [self.step_s] * steps
        if self.calls == 0 and self.first_step_s is not None:
            times[0] = self.first_step_s
        self.calls += steps
        return times


# --------------------------------------------------------------------------------------------------
# TF32
# --------------------------------------------------------------------------------------------------

def _has_fp32_precision_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _legacy(read: Callable[[], Any]) -> Any:
    """A legacy TF32 setting, or None where torch refuses to read it (the user's state already mixes APIs)."""
    try:
        return read()
    except RuntimeError:
        return None


@contextlib.contextmanager
def precision_flags(precision: str, device: torch.device) -> Iterator[bool]:
    """Set TF32 explicitly for the run (on for 'tf32' on CUDA, off otherwise) and restore it exactly.

    Where torch has the `fp32_precision` settings (2.9 and later), those say what runs: cuBLAS
    matmul and cuDNN convolution (and RNN) are set to 'tf32' or 'ieee'. torch keeps the legacy
    settings (`set_float32_matmul_precision`, `allow_tf32`) as separate state and refuses to read
    them when they disagree with the new ones ("mix of the legacy and new APIs"), and its own code
    (inductor) still reads them; so the legacy values are moved in step with the new ones, never
    left to disagree, and a user's earlier `set_float32_matmul_precision('high')` is restored
    afterwards with everything else. Older torch gets the legacy flags only. Yields whether TF32
    is in effect, which every row records.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    allow = precision == "tf32" and torch.device(device).type == "cuda"
    if not _has_fp32_precision_api():
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        try:
            yield allow
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    backends = torch.backends
    new_settings = [backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn]
    if hasattr(backends, "mkldnn") and hasattr(backends.mkldnn, "matmul"):
        new_settings.append(backends.mkldnn.matmul)  # set_float32_matmul_precision also moves this one
    saved_new = [setting.fp32_precision for setting in new_settings]
    legacy_matmul = _legacy(torch.get_float32_matmul_precision)
    legacy_cudnn = _legacy(lambda: backends.cudnn.allow_tf32)
    value = "tf32" if allow else "ieee"
    if legacy_matmul is not None:
        torch.set_float32_matmul_precision("high" if allow else "highest")
    if legacy_cudnn is not None:
        backends.cudnn.allow_tf32 = allow
    for setting in new_settings[:3]:
        setting.fp32_precision = value
    try:
        yield allow
    finally:
        if legacy_matmul is not None:
            torch.set_float32_matmul_precision(legacy_matmul)
        if legacy_cudnn is not None:
            backends.cudnn.allow_tf32 = legacy_cudnn
        for setting, old in zip(new_settings, saved_new):
            setting.fp32_precision = old


def tf32_state() -> dict[str, str]:
    """The TF32 settings in effect, as text, read through the API that does not raise (for cache keys)."""
    if _has_fp32_precision_api():
        return {"matmul": str(torch.backends.cuda.matmul.fp32_precision),
                "cudnn_conv": str(torch.backends.cudnn.conv.fp32_precision)}
    return {"matmul": str(torch.backends.cuda.matmul.allow_tf32), "cudnn_conv": str(torch.backends.cudnn.allow_tf32)}
