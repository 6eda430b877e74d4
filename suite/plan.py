"""A throughput run's plan and its estimated time, before anything is measured (`--dry-run`).

The estimate plays the harness's own rules (:func:`suite.timing.time_callable` and
:func:`suite.sweep.stop_reason`) against a model of the device instead of the device: a step of
batch B takes max(floor, 2 x MACs x (B + H) / (peak x MFU)), as if every step also paid for H
images of fixed cost (launches, small kernels), so images/sec grows with the batch and saturates,
and the flat rule, the step cap and the per-model budget cut the sweep where the real run would. The peak is the device's measured one, or a named GPU's
datasheet figure when there is no device at hand. The other figures are assumptions, printed with
the estimate: the fraction of the peak a model reaches, the launch floor of a step, and a fixed
cost per model (its child process, build, count) and per batch (the first, tuned step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from suite.settings import Settings
from suite.sweep import SweepState, stop_reason
from suite.timing import ConstantClock, time_callable
from suite.zoo import ModelSpec


@dataclass(frozen=True)
class DeviceModel:
    """What the estimate assumes of a device (see the module docstring)."""

    name: str
    peak_tflops: float
    peak_source: str
    mfu: float
    half_batch: int
    step_floor_s: float
    model_overhead_s: float
    first_step_extra_s: float

    def step_s(self, macs_per_image: int | None, batch: int) -> float:
        compute = 2.0 * (macs_per_image or 0) * (batch + self.half_batch) / (self.peak_tflops * 1e12 * self.mfu)
        return max(self.step_floor_s, compute)

    def describe(self) -> str:
        return (f"{self.name}: peak {self.peak_tflops:.4g} TFLOP/s ({self.peak_source}); assumed: large batches "
                f"reach {100 * self.mfu:.0f}% of it and batch {self.half_batch} half of that, a step takes at least "
                f"{1e3 * self.step_floor_s:g} ms, each model costs {self.model_overhead_s:g} s besides its batches "
                f"(process, build, count), each batch's first step {self.first_step_extra_s:g} s more (tuning)")


def device_model(device_type: str, name: str, peak_tflops: float, peak_source: str) -> DeviceModel:
    """The assumptions for a CUDA device or a CPU around a known peak."""
    if device_type == "cuda":
        return DeviceModel(name, peak_tflops, peak_source, mfu=0.35, half_batch=64, step_floor_s=0.004,
                           model_overhead_s=5.0, first_step_extra_s=0.3)
    return DeviceModel(name, peak_tflops, peak_source, mfu=0.6, half_batch=1, step_floor_s=0.002,
                       model_overhead_s=2.0, first_step_extra_s=0.0)


@dataclass(frozen=True)
class ModelPlan:
    """One model's estimated part of the run."""

    model: str
    img_size: int
    macs_per_image: int | None
    batches: tuple[int, ...]
    stop: str
    seconds: float


def _measure_s(step_s: float, first_s: float, rules: object, budget_s: float | None) -> float:
    measurement = time_callable(lambda: None, ConstantClock(step_s, first_s), rules, budget_s=budget_s)
    return measurement.warmup_s + measurement.total_s


def estimate_model(spec: ModelSpec, macs: int | None, settings: Settings, device: DeviceModel) -> ModelPlan:
    """Play the sweep's rules against `device` for one model."""
    elapsed = device.model_overhead_s
    budget = settings.budget()

    def remaining() -> float | None:
        return None if budget is None else max(0.0, budget - elapsed)

    if settings.measures_latency:
        step = device.step_s(macs, 1)
        elapsed += _measure_s(step, step + device.first_step_extra_s, settings.latency_rules(), remaining())
    state = SweepState()
    measured: list[int] = []
    stop = "last"
    batches = list(settings.batch_sizes)
    work = 3 if settings.bench == "train" else 1  # a training step: about three forwards
    for index, batch in enumerate(batches):
        step = work * device.step_s(macs, batch)
        elapsed += _measure_s(step, step + device.first_step_extra_s, settings.timing_rules(), remaining())
        measured.append(batch)
        state.record(batch, batch / step, step, settings.flat_tolerance)
        next_batch = batches[index + 1] if index + 1 < len(batches) else None
        stop = stop_reason(state, next_batch, settings, remaining())
        if stop:
            break
    return ModelPlan(spec.name, settings.model_img_size(spec.img_size), macs, tuple(measured), stop, elapsed)


def estimate_run(pairs: Sequence[tuple[ModelSpec, int | None]], settings: Settings, device: DeviceModel,
                 count_macs: Callable[[ModelSpec, int, str], int | None], peak_s: float) -> tuple[list[ModelPlan], float]:
    """Every (model, image side)'s plan and the run's total seconds (the peak measurement included)."""
    plans = []
    for spec, side in pairs:
        at = replace(settings, img_size=side) if side is not None else settings
        plans.append(estimate_model(spec, count_macs(spec, at.model_img_size(spec.img_size), at.mixer_rule), at,
                                    device))
    return plans, peak_s + sum(p.seconds for p in plans)


def peak_seconds(settings: Settings, n_models: int) -> float:
    """Time spent on the matmul peak: once per run on a GPU (sustained: about 2.5 s), before each model on a CPU."""
    if settings.device.type == "cuda":
        return 2.5 if settings.peak_rule == "sustained" else 0.5
    return 0.5 * n_models + 1.0
