"""Collaborators for testing the measurement core on the CPU: clocks that model a device, failures
on cue (out-of-memory, sticky CUDA errors, signals), fixed peaks and counts, a fake NVML and a fake
torch.cuda. All are module-level and picklable, so a sweep in a child process gets the same ones."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from suite.peaks import Peak
from suite.sweep import Instruments, Work
from suite.zoo import ModelSpec

# --------------------------------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------------------------------


class ModelledClock:
    """Runs each step for real (so shape errors still surface) but reports the modelled time:
    2 x MACs x batch over the peak, never below a launch floor."""

    name = "modelled"

    def __init__(self, work: Work, peak_tflops: float, floor_s: float, log: list[str] | None = None) -> None:
        self.step_s = max(floor_s, 2.0 * (work.macs_per_image or 0) * work.batch / (peak_tflops * 1e12))
        self.log = log

    def run(self, fn: Any, steps: int, between: Any = None) -> list[float]:
        for _ in range(steps):
            if between is not None:
                between()
            fn()
            if self.log is not None:
                self.log.append("step")
        return [self.step_s] * steps


@dataclass(frozen=True)
class Failure:
    """What to do at a given (model, bench, batch): raise an exception of `kind`, or send a signal."""

    kind: str
    message: str = ""

    def happen(self) -> None:
        if self.kind == "oom":
            raise torch.OutOfMemoryError(self.message or "CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.kind == "runtime":
            raise RuntimeError(self.message)
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        if self.kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.kind == "hang":
            time.sleep(3600)
        raise ValueError(f"unknown failure kind {self.kind!r}")


STICKY = Failure("runtime", "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                            "asynchronously reported")


@dataclass(frozen=True)
class ModelledClocks:
    """A clock factory: every (model, bench, batch) gets a :class:`ModelledClock`; `failures` fire
    on the first step of the named measurements, `slow` multiplies a model's step time."""

    peak_tflops: float = 1.0
    floor_s: float = 1e-4
    failures: tuple[tuple[tuple[str, str, int], Failure], ...] = ()
    step_s: tuple[tuple[str, float], ...] = ()

    def __call__(self, device: torch.device, work: Work) -> Any:
        for (model, bench, batch), failure in self.failures:
            if (model, bench, batch) == (work.model, work.bench, work.batch):
                return _FailingClock(failure)
        fixed = dict(self.step_s).get(work.model)
        if fixed is not None:
            return _FixedClock(fixed)
        return ModelledClock(work, self.peak_tflops, self.floor_s)


class _FailingClock:
    name = "failing"

    def __init__(self, failure: Failure) -> None:
        self.failure = failure

    def run(self, fn: Any, steps: int, between: Any = None) -> list[float]:
        self.failure.happen()
        return []


class _FixedClock:
    """Every step takes `step_s`: reported only, or (`sleep`) also spent in wall time."""

    name = "fixed"

    def __init__(self, step_s: float, sleep: bool = False) -> None:
        self.step_s, self.sleep = step_s, sleep

    def run(self, fn: Any, steps: int, between: Any = None) -> list[float]:
        for _ in range(steps):
            if between is not None:
                between()
            fn()
            if self.sleep:
                time.sleep(self.step_s)
        return [self.step_s] * steps


# --------------------------------------------------------------------------------------------------
# Peaks, counts, builds
# --------------------------------------------------------------------------------------------------

@dataclass
class SequencePeaks:
    """Peaks measured one after another from a list (in-process runs: the state persists)."""

    figures: list[float]
    calls: int = 0

    def __call__(self, device: torch.device, precision: str, rule: str, telemetry: Any) -> Peak:
        figure = self.figures[min(self.calls, len(self.figures) - 1)]
        self.calls += 1
        return Peak(figure, precision, 64, f"fake {rule}", 5, 0.01)


@dataclass(frozen=True)
class FixedPeak:
    tflops: float = 0.5

    def __call__(self, device: torch.device, precision: str, rule: str, telemetry: Any) -> Peak:
        return Peak(self.tflops, precision, 64, f"fake {rule}", 5, 0.01)


@dataclass(frozen=True)
class FixedMacs:
    macs: int = 1_000_000

    def __call__(self, spec: ModelSpec, img_size: int, rule: str) -> int:
        return self.macs


def instruments(clocks: ModelledClocks | None = None, peak: Any = None, macs: int = 1_000_000,
                **others: Any) -> Instruments:
    """Instruments with a modelled clock (for sweeps and latency), a fixed peak and a fixed count."""
    clocks = clocks or ModelledClocks()
    return Instruments(clock=clocks, latency_clock=clocks, count_macs=FixedMacs(macs), peak=peak or FixedPeak(),
                       **others)


def tiny_vit(*, embed_dim: int = 16, img_size: int = 32, num_classes: int = 10, **kwargs: Any) -> VisionTransformer:
    """A one-block ViT (timm's VisionTransformer: one class, so one `forward` code object for dynamo)."""
    return VisionTransformer(img_size=img_size, patch_size=8, embed_dim=embed_dim, depth=1, num_heads=2,
                             num_classes=num_classes, **kwargs)


def tiny_vit_specs(count: int) -> list[ModelSpec]:
    """`count` ViTs of one class with different widths (each a different shape to dynamo)."""
    return [ModelSpec(f"tiny-vit-{i}", "test", "attention", 32, factory=tiny_vit,
                      factory_kwargs=(("embed_dim", 16 + 8 * i),), fixed_size=True) for i in range(count)]


# --------------------------------------------------------------------------------------------------
# NVML and torch.cuda
# --------------------------------------------------------------------------------------------------

class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The part of pynvml the telemetry uses: clock, temperature and power follow a script, the
    energy counter grows by `watts` x elapsed time (in mJ, as NVML counts)."""

    NVMLError = FakeNvmlError
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, clocks_mhz: list[float], watts: float = 500.0, temperature_c: float = 60.0,
                 no_energy: bool = False) -> None:
        self.clocks_mhz, self.watts, self.temperature_c, self.no_energy = clocks_mhz, watts, temperature_c, no_energy
        self.samples = 0
        self.started = time.monotonic()
        self.handles: list[tuple[str, Any]] = []

    def nvmlDeviceGetClockInfo(self, handle: Any, kind: int) -> int:  # noqa: N802 - NVML's names
        value = self.clocks_mhz[min(self.samples, len(self.clocks_mhz) - 1)]
        self.samples += 1
        return int(value)

    def nvmlDeviceGetTemperature(self, handle: Any, kind: int) -> int:  # noqa: N802
        return int(self.temperature_c + self.samples)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: N802
        return int(self.watts * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802
        if self.no_energy:
            raise FakeNvmlError("not supported")
        return int((time.monotonic() - self.started) * self.watts * 1000)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:  # noqa: N802
        if not uuid.startswith("GPU-"):
            raise FakeNvmlError("invalid uuid")
        self.handles.append(("uuid", uuid))
        return ("uuid", uuid)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:  # noqa: N802
        self.handles.append(("index", index))
        return ("index", index)


@dataclass
class FakeCuda:
    """Stands in for torch.cuda where stream and device wiring is checked: records the current
    device whenever a stream, an event or a graph is made or used."""

    log: list[tuple[str, Any]] = field(default_factory=list)
    current: int = 0

    @contextlib.contextmanager
    def device(self, device: Any) -> Iterator[None]:
        saved, self.current = self.current, torch.device(device).index
        try:
            yield
        finally:
            self.current = saved

    def Stream(self, device: Any = None) -> Any:  # noqa: N802 - torch.cuda's name
        fake = self

        class _Stream:
            index = torch.device(device).index if device is not None else fake.current

            def wait_stream(self, other: Any) -> None:
                fake.log.append(("wait_stream", (self.index, other.index)))

            def __repr__(self) -> str:
                return f"stream(cuda:{self.index})"

        stream = _Stream()
        self.log.append(("Stream", (stream.index, self.current)))
        return stream

    def current_stream(self, device: Any = None) -> Any:
        return self.Stream(device if device is not None else torch.device("cuda", self.current))

    @contextlib.contextmanager
    def stream(self, stream: Any) -> Iterator[None]:
        self.log.append(("use_stream", (stream.index, self.current)))
        yield

    def CUDAGraph(self) -> Any:  # noqa: N802
        fake = self

        class _Graph:
            def replay(self) -> None:
                fake.log.append(("replay", fake.current))

        return _Graph()

    @contextlib.contextmanager
    def graph(self, graph: Any, stream: Any = None) -> Iterator[None]:
        self.log.append(("capture", (stream.index if stream is not None else None, self.current)))
        yield

    def Event(self, enable_timing: bool = False) -> Any:  # noqa: N802
        fake = self

        class _Event:
            def record(self, stream: Any = None) -> None:
                fake.log.append(("record", (stream.index if stream is not None else None, fake.current)))

            def elapsed_time(self, other: Any) -> float:
                return 2.0

        return _Event()

    def synchronize(self, device: Any = None) -> None:
        self.log.append(("synchronize", torch.device(device).index if device is not None else self.current))


@dataclass
class CountingClocks:
    """A modelled clock factory that lists every measurement it was asked for (in-process runs)."""

    measured: list[tuple[str, str, int]] = field(default_factory=list)

    def __call__(self, device: torch.device, work: Work) -> Any:
        self.measured.append((work.model, work.bench, work.batch))
        return ModelledClock(work, 1.0, 1e-4)


@dataclass(frozen=True)
class BrokenBuild:
    """Builds like the harness does, but the named model fails to build."""

    model: str

    def __call__(self, spec: ModelSpec, img_size: int, mixer_rule: str, device: torch.device, **kwargs: Any) -> Any:
        from suite.build import build_for_timing

        if spec.name == self.model:
            raise RuntimeError("no such layer\nsecond line")
        return build_for_timing(spec, img_size, mixer_rule, device, **kwargs)


class WithIndex(torch.nn.Module):
    """A model with a buffer that is not a BatchNorm statistic (an index table made at init)."""

    def __init__(self, num_classes: int = 4, img_size: int = 4) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.register_buffer("index", torch.arange(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)[..., self.index]


def with_index(**kwargs: Any) -> WithIndex:
    return WithIndex()


def indexed_spec() -> ModelSpec:
    return ModelSpec("with-index", "test", "mlp", 4, factory=with_index)


@dataclass
class EventLog:
    """One list that a clock, a memory meter and a test share (in-process runs)."""

    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedClocks:
    log: EventLog
    peak_tflops: float = 1.0

    def __call__(self, device: torch.device, work: Work) -> Any:
        return ModelledClock(work, self.peak_tflops, 1e-3, self.log.events)


class _LoggedMeter:
    def __init__(self, log: EventLog) -> None:
        self.log = log

    def reset(self) -> None:
        self.log.events.append("reset")

    def peaks_mb(self) -> tuple[float, float]:
        self.log.events.append("read")
        return 100.0, 120.0


@dataclass(frozen=True)
class LoggedMemory:
    """A memory meter factory that logs when the peak is reset and read."""

    log: EventLog

    def __call__(self, device: torch.device) -> _LoggedMeter:
        return _LoggedMeter(self.log)


@dataclass(frozen=True)
class FakeNvmlTelemetry:
    """A telemetry factory: NVML telemetry over a fake NVML whose GPU draws `watts`."""

    watts: float = 400.0

    def __call__(self, device: torch.device) -> Any:
        from suite.telemetry import NvmlTelemetry

        return NvmlTelemetry("handle", FakeNvml(clocks_mhz=[1755, 1740], watts=self.watts), interval_s=0.005)


@dataclass(frozen=True)
class SleepingClocks:
    """A clock factory whose steps really take `step_s` of wall time (so a run can be killed mid-way)."""

    step_s: float = 0.02

    def __call__(self, device: torch.device, work: Work) -> Any:
        return _FixedClock(self.step_s, sleep=True)


class _OomInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.batch = x.shape[0]
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        if ctx.batch >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (in backward)")
        return grad


class OomInBackward(torch.nn.Module):
    """A tiny classifier whose backward runs out of memory from batch 4 on (its forward never does)."""

    def __init__(self, num_classes: int = 10, img_size: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.head = torch.nn.Linear(3 * img_size * img_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OomInBackward.apply(self.head(x.flatten(1)))


def oom_in_backward(**kwargs: Any) -> OomInBackward:
    return OomInBackward(num_classes=kwargs.get("num_classes", 10), img_size=kwargs.get("img_size", 8))


def oom_in_backward_spec() -> ModelSpec:
    return ModelSpec("oom-in-backward", "test", "mlp", 8, factory=oom_in_backward, fixed_size=True)
