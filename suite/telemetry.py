"""What the device did while it was timed: SM clock, temperature, power and energy (NVIDIA, via NVML).

A throughput figure means little without the clock it ran at: an H100 under sustained load sits
below its boost clock, a hot or power-capped GPU lower still. Every timed batch therefore opens a
telemetry window; a background thread samples the SM clock, temperature and power through NVML
(nvidia-ml-py's `pynvml`) while the steps run, and NVML's energy counter is read at both ends, so
a row carries joules per image and the average power beside its images/sec.

The NVML module is passed in (`nvml=`), so the mechanism is tested on the CPU with a fake one.
On a CPU, or where NVML is missing, :class:`NullTelemetry` records nothing and says so.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Reading:
    """What one window saw; None where the device does not report it."""

    source: str
    seconds: float = 0.0
    samples: int = 0
    sm_clock_mhz: float | None = None
    sm_clock_min_mhz: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    energy_j: float | None = None

    def columns(self) -> dict[str, Any]:
        return {"telemetry": self.source, "sm_clock_mhz": self.sm_clock_mhz, "sm_clock_min_mhz": self.sm_clock_min_mhz,
                "temperature_c": self.temperature_c, "power_w": self.power_w, "energy_j": self.energy_j}


@dataclass
class Window:
    """An open (then closed) telemetry window; `result()` is valid once the `with` block has ended."""

    source: str
    _result: Reading | None = None

    def result(self) -> Reading:
        return self._result or Reading(self.source)


class Telemetry(Protocol):
    name: str

    def window(self) -> contextlib.AbstractContextManager[Window]: ...


class NullTelemetry:
    """No telemetry (CPU, or no NVML): every reading is empty."""

    def __init__(self, reason: str = "none") -> None:
        self.name = reason

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        yield Window(self.name)


@dataclass
class _Samples:
    clocks: list[float] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    powers: list[float] = field(default_factory=list)


class NvmlTelemetry:
    """NVML sampled every `interval_s` in a thread, and its energy counter read at both ends."""

    name = "nvml"

    def __init__(self, handle: Any, nvml: Any, interval_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handle, self.nvml, self.interval_s, self.clock = handle, nvml, interval_s, clock

    def _sample(self, into: _Samples) -> None:
        nvml = self.nvml
        for target, read in ((into.clocks, lambda: nvml.nvmlDeviceGetClockInfo(self.handle, nvml.NVML_CLOCK_SM)),
                             (into.temperatures,
                              lambda: nvml.nvmlDeviceGetTemperature(self.handle, nvml.NVML_TEMPERATURE_GPU)),
                             (into.powers, lambda: nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)):
            try:
                target.append(float(read()))
            except nvml.NVMLError:
                pass

    def _energy_j(self) -> float | None:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0
        except self.nvml.NVMLError:
            return None

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        holder = Window(self.name)
        samples = _Samples()
        stop = threading.Event()

        def loop() -> None:
            while True:
                self._sample(samples)
                if stop.wait(self.interval_s):
                    return

        energy_start = self._energy_j()
        started = self.clock()
        thread = threading.Thread(target=loop, name="suite-telemetry", daemon=True)
        thread.start()
        try:
            yield holder
        finally:
            stop.set()
            thread.join()
            self._sample(samples)
            seconds = self.clock() - started
            energy_end = self._energy_j()
            energy = energy_end - energy_start if energy_start is not None and energy_end is not None else None
            power = energy / seconds if energy is not None and seconds > 0 else _mean(samples.powers)
            holder._result = Reading(
                self.name, seconds, len(samples.clocks), _mean(samples.clocks),
                min(samples.clocks) if samples.clocks else None,
                max(samples.temperatures) if samples.temperatures else None, power, energy)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def nvml_handle(nvml: Any, device_index: int, uuid: str | None) -> Any:
    """The NVML handle of a CUDA device: by UUID (what CUDA_VISIBLE_DEVICES renumbering cannot confuse),
    else through the CUDA_VISIBLE_DEVICES list, else by index."""
    if uuid:
        text = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        with contextlib.suppress(nvml.NVMLError):
            return nvml.nvmlDeviceGetHandleByUUID(text)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and device_index < len(visible):
        entry = visible[device_index]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return nvml.nvmlDeviceGetHandleByUUID(entry)
    return nvml.nvmlDeviceGetHandleByIndex(device_index)


def telemetry_for(device: Any, nvml: Any | None = None) -> Telemetry:
    """NVML telemetry for a CUDA device where nvidia-ml-py and a driver are there; else an empty one."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return NullTelemetry("none (cpu)")
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return NullTelemetry("none (nvidia-ml-py not installed)")
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        nvml.nvmlInit()
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
        return NvmlTelemetry(nvml_handle(nvml, index, uuid), nvml)
    except nvml.NVMLError as exc:
        return NullTelemetry(f"none (NVML: {exc})")
