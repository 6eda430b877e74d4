"""The measurement core: one model's batch sweep (and its batch-1 latency), measured with
collaborators that are passed in, so every rule is tested on the CPU with fakes.

`sweep_model(job, instruments, emit)` builds the model once, measures its batch-1 latency, then
each batch of the sweep: warm-up (steps and seconds), peak memory reset *after* the warm-up (so
cuDNN benchmark trials and autotuning workspaces are not counted), timed steps inside a telemetry
window, and a row. It stops when the sweep is flat, a step exceeds the cap, the next batch would
not fit in the model's budget, or a failure says larger batches cannot run. Rows and progress go
out through `emit`, which is a pipe to the parent when the sweep runs in its own process
(:mod:`suite.jobs`) and a plain callback in-process.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from suite.build import BuiltModel, build_for_timing, free_memory_bytes
from suite.cli import error_line
from suite.counting import macs_per_image
from suite.peaks import Peak, datasheet_peak, measure_peak
from suite.results import environment
from suite.settings import Settings
from suite.steps import (TRAIN_RECIPE, CompiledForward, StickyCudaError, TrainStep, autocast, capture_cuda_graph,
                         channels_last_choice, classify_failure, free_memory, make_input, prepare_model)
from suite.telemetry import Reading, Telemetry, telemetry_for
from suite.timing import (Clock, Measurement, SyncedHostClock, TimingRules, default_clock, precision_flags,
                          time_steps, warm_up)
from suite.zoo import ModelSpec, mixer_rule_used

Emit = Callable[[str, Any], None]


# --------------------------------------------------------------------------------------------------
# Collaborators
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Work:
    """What one timed step computes, for clocks that model the device instead of reading it."""

    model: str
    batch: int
    macs_per_image: int | None
    bench: str


def _default_clock(device: torch.device, work: Work) -> Clock:
    return default_clock(device)


def _latency_clock(device: torch.device, work: Work) -> Clock:
    return SyncedHostClock(device)


def _count_macs(spec: ModelSpec, img_size: int, mixer_rule: str) -> int | None:
    try:
        return int(macs_per_image(spec, img_size, mixer_rule))
    except Exception:  # a counting failure must not cost the timing row
        return None


def _measure_peak(device: torch.device, precision: str, rule: str, telemetry: Telemetry) -> Peak:
    return measure_peak(device, precision, default_clock(device), rule=rule, telemetry=telemetry)


class MemoryMeter:
    """Peak device memory over the timed steps: reset after the warm-up (so cuDNN benchmark trials
    and autotuning workspaces are not counted), read after the last timed step. CPU: none."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks_mb(self) -> tuple[float | None, float | None]:
        """(max allocated, max reserved) in MiB since the reset; (None, None) on a CPU."""
        if self.device.type != "cuda":
            return None, None
        return (torch.cuda.max_memory_allocated(self.device) / 2**20,
                torch.cuda.max_memory_reserved(self.device) / 2**20)


@dataclass(frozen=True)
class Instruments:
    """What a sweep measures with. The defaults measure for real; tests pass fakes (all picklable,
    so a sweep in a child process gets the same ones)."""

    clock: Callable[[torch.device, Work], Clock] = _default_clock
    latency_clock: Callable[[torch.device, Work], Clock] = _latency_clock
    telemetry: Callable[[torch.device], Telemetry] = telemetry_for
    count_macs: Callable[[ModelSpec, int, str], int | None] = _count_macs
    peak: Callable[[torch.device, str, str, Telemetry], Peak] = _measure_peak
    free_bytes: Callable[[torch.device], int | None] = free_memory_bytes
    build: Callable[..., BuiltModel] = build_for_timing
    memory: Callable[[torch.device], MemoryMeter] = MemoryMeter


# --------------------------------------------------------------------------------------------------
# A job: one model's sweep
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelJob:
    """One model's part of a run: what is still to measure, and what earlier runs measured."""

    spec: ModelSpec
    settings: Settings
    batches: tuple[int, ...]
    prior: tuple[Mapping[str, Any], ...] = ()
    latency: bool = True
    peak: Peak | None = None
    threads: int | None = None


@dataclass
class SweepState:
    """What one model's sweep has seen, to decide whether the next batch is worth measuring."""

    best_ips: float = 0.0
    best_batch: int | None = None
    flat_steps: int = 0
    last_step_s: float | None = None
    last_batch: int | None = None

    def record(self, batch: int, images_per_sec: float, step_s: float, tolerance: float) -> None:
        if images_per_sec > self.best_ips * (1 + tolerance):
            self.flat_steps = 0
        else:
            self.flat_steps += 1
        if images_per_sec > self.best_ips:
            self.best_ips, self.best_batch = images_per_sec, batch
        self.last_step_s, self.last_batch = step_s, batch


def minimal_batch_cost_s(step_s: float, rules: TimingRules) -> float:
    """The least a batch costs under a budget: its warm-up steps and seconds, then the floor of timed steps."""
    return step_s * (max(rules.warmup_steps, 1) + rules.floor_steps) + rules.warmup_s


def stop_reason(state: SweepState, next_batch: int | None, settings: Settings, remaining_s: float | None) -> str:
    """Why the sweep ends after the batch just measured ('' to go on)."""
    if next_batch is None:
        return "last"
    if settings.flat_patience and state.flat_steps >= settings.flat_patience:
        return "flat"
    if settings.step_cap_s and state.last_step_s is not None and state.last_step_s > settings.step_cap_s:
        return "step_cap"
    if remaining_s is not None and state.last_step_s is not None and state.last_batch:
        estimate = state.last_step_s * next_batch / state.last_batch
        if minimal_batch_cost_s(estimate, settings.timing_rules()) > remaining_s:
            return "budget"
    return ""


#: Statuses after which a sweep goes on to the next batch (a compile that fell back is recorded, not fatal).
MEASURED_STATUSES = ("ok", "compile_fallback", "compile_recompiled")


def ended_sweep(row: Mapping[str, Any]) -> bool:
    """Whether an earlier row closed its sweep (a failure, or any stop but running out of batch sizes)."""
    return row.get("status") not in MEASURED_STATUSES or blank_or_text(row.get("sweep_stop")) not in ("", "last")


def blank_or_text(value: Any) -> str:
    """A cell as text, '' for a blank one (None or NaN, as pandas reads an empty CSV cell)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


# --------------------------------------------------------------------------------------------------
# Measuring one batch
# --------------------------------------------------------------------------------------------------

@dataclass
class BatchResult:
    measurement: Measurement
    reading: Reading
    peak_allocated_mb: float | None = None
    peak_reserved_mb: float | None = None
    compile: CompiledForward | None = None
    skipped_steps: int | None = None


@contextlib.contextmanager
def device_session(settings: Settings) -> Iterator[bool]:
    """All device work of a sweep: inside the chosen CUDA device's context, cuDNN benchmark on,
    TF32 set explicitly; everything restored afterwards. Yields whether TF32 is in effect."""
    device = settings.device
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
            saved = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            stack.callback(setattr, torch.backends.cudnn, "benchmark", saved)
        yield stack.enter_context(precision_flags(settings.precision, device))


def measure_batch(model: torch.nn.Module, batch: int, img_size: int, settings: Settings, channels_last: bool,
                  clock: Clock, telemetry: Telemetry, memory: MemoryMeter, rules: TimingRules,
                  budget_s: float | None, train: bool = False) -> BatchResult:
    """Warm up and time `model` at `batch` (an inference forward, or a training step): the
    measurement, telemetry, peak memory and compile record."""
    device = settings.device
    x = make_input(batch, img_size, settings, channels_last)
    compiled: CompiledForward | None = None
    grad_mode = contextlib.nullcontext() if train else torch.inference_mode()
    precision = contextlib.nullcontext() if train else autocast(settings)  # a training step sets its own
    between = None
    with grad_mode, precision:
        run = model.train() if train else model  # compiled in the mode it will run in: no recompile later
        if settings.compile:
            compiled = CompiledForward(model, settings)
            with autocast(settings):  # the precision the compiled graph will run in
                compiled.first_call(x, device)
            run = compiled.compiled
        if train:
            training = TrainStep(model, run, x, settings, getattr(model, "num_classes", 1000) or 1000)
            step, between = training, training.zero_grad
        else:
            def forward() -> object:
                return run(x)

            step = capture_cuda_graph(forward, device) if settings.cuda_graphs else forward
        warm = warm_up(step, clock, rules, budget_s, between)
        if train:
            training.forget_skips()
        memory.reset()
        left = None if budget_s is None else max(0.0, budget_s - warm.seconds)
        with telemetry.window() as window:
            measurement = time_steps(step, clock, rules, budget_s=left, estimate_s=warm.last_step_s, warmup=warm,
                                     between=between)
    result = BatchResult(measurement, window.result(), compile=compiled,
                         skipped_steps=training.skipped_steps if train else None)
    result.peak_allocated_mb, result.peak_reserved_mb = memory.peaks_mb()
    if compiled is not None:
        compiled.check_after_timing()
    return result


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------

def base_row(spec: ModelSpec, batch: int, bench: str, settings: Settings, env: Mapping[str, Any], tf32: bool,
             channels_last: bool | None, channels_last_reason: str) -> dict[str, Any]:
    """The identifying and settings columns of one row (status and measurements come later)."""
    img = settings.model_img_size(spec.img_size)
    return {
        "bench": bench, "model": spec.name, "group": spec.group, "family": spec.family,
        "timm_name": spec.timm_name or "", "build_source": spec.build_source, "img_size": img, "batch_size": batch,
        **settings.columns(), "tf32": tf32, "channels_last": channels_last,
        "channels_last_reason": channels_last_reason,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if settings.device.type == "cuda" else False,
        "mixer_rule": mixer_rule_used(spec, img, settings.mixer_rule),
        "status": "", "error": "", "sweep_stop": "", **env,
    }


def fill_measurement(row: dict[str, Any], result: BatchResult, macs: int | None, peak: Peak | None,
                     params: int, clock: Clock) -> None:
    """Add the measured columns (ours, and timm benchmark.py's on throughput rows) to a row."""
    m = result.measurement
    batch = row["batch_size"]
    images_per_sec = batch / m.median_s
    train = row["bench"] == "train"
    # Model FLOPs: 2 x MACs for a forward; a training step is counted as three forwards (forward,
    # and a backward twice its cost), whatever gradient checkpointing recomputes.
    flops_per_image = 2.0 * macs * (3 if train else 1) if macs else None
    achieved = flops_per_image * images_per_sec / 1e12 if flops_per_image else None
    on_gpu = str(row.get("device", "")).startswith("cuda")
    datasheet = datasheet_peak(str(row.get("device_name", "")), row["precision"]) if on_gpu else None
    reading = result.reading
    row.update({
        "status": "ok", "clock": clock.name, "timed_steps": m.steps, "warmup_steps": m.warmup_steps,
        "warmup_s": m.warmup_s, "first_step_ms": m.first_step_s * 1e3 if m.first_step_s is not None else None,
        "step_time_median_ms": m.median_s * 1e3, "step_time_p10_ms": m.p10_s * 1e3,
        "step_time_p90_ms": m.p90_s * 1e3, "step_time_p99_ms": m.p99_s * 1e3, "step_time_iqr_ms": m.iqr_s * 1e3,
        "step_time_mean_ms": m.mean_s * 1e3, "iqr_rel": m.iqr_rel, "noise": m.noise,
        "images_per_sec": images_per_sec,
        "peak_memory_mb": result.peak_allocated_mb, "peak_reserved_mb": result.peak_reserved_mb,
        "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "macs_per_image": macs, "model_flops_per_image": flops_per_image, "achieved_tflops": achieved,
        **(peak.columns() if peak else {"peak_tflops": None}),
        "mfu": achieved / peak.tflops if achieved and peak else None,
        "datasheet_tflops": datasheet[0] if datasheet else None,
        "datasheet_source": datasheet[1] if datasheet else "",
        "mfu_datasheet": achieved / datasheet[0] if achieved and datasheet else None,
        **reading.columns(),
        "energy_j_per_image": reading.energy_j / (m.steps * batch) if reading.energy_j is not None else None,
        "params": params,
    })
    if result.compile is not None:
        row.update(result.compile.info.columns())
        if result.compile.failed:
            row["status"] = result.compile.failed
    if row["bench"] == "latency":
        row.update({"latency_p50_ms": m.median_s * 1e3, "latency_p90_ms": m.p90_s * 1e3,
                    "latency_p99_ms": m.p99_s * 1e3})
        return
    if train:
        row.update({
            "train_recipe": TRAIN_RECIPE, "skipped_optimizer_steps": result.skipped_steps,
            "train_samples_per_sec": round(images_per_sec, 2),
            "train_step_time": round(m.median_s * 1e3, 3), "train_batch_size": batch,
            "train_img_size": row["img_size"], "param_count": round(params / 1e6, 2),
        })
        return
    row.update({
        "infer_samples_per_sec": round(images_per_sec, 2), "infer_step_time": round(m.median_s * 1e3, 3),
        "infer_batch_size": batch, "infer_img_size": row["img_size"],
        "infer_gmacs": round(macs / 1e9, 2) if macs else None, "param_count": round(params / 1e6, 2),
    })


def failure_row(row: dict[str, Any], status: str, error: str, params: int | None) -> dict[str, Any]:
    row.update({"status": status, "error": error, "sweep_stop": status, "params": params})
    return row


# --------------------------------------------------------------------------------------------------
# One model's sweep
# --------------------------------------------------------------------------------------------------

@dataclass
class _Model:
    built: BuiltModel
    model: torch.nn.Module
    channels_last: bool
    reason: str
    macs: int | None
    peak: Peak | None


@dataclass
class _Sweep:
    job: ModelJob
    instruments: Instruments
    emit: Emit
    env: dict[str, Any] = field(default_factory=dict)
    tf32: bool = False
    started: float = field(default_factory=time.perf_counter)
    compile_s: float = 0.0
    clock_s: float = 0.0
    ready: _Model | None = None

    @property
    def settings(self) -> Settings:
        return self.job.settings

    def remaining(self) -> float | None:
        """What is left of the model's budget. It is charged the wall time since the job began, or the
        time the clocks reported if that is more (the same on a real device; a modelled clock's own
        time in tests). Compile time is not charged, so a compiled sweep covers the batch sizes of an
        eager one."""
        budget = self.settings.budget()
        spent = max(time.perf_counter() - self.started - self.compile_s, self.clock_s)
        return None if budget is None else max(0.0, budget - spent)

    def prepare(self) -> _Model:
        """Build, make ready, count and find the peak, once, on first need."""
        if self.ready is None:
            spec, settings = self.job.spec, self.settings
            img = settings.model_img_size(spec.img_size)
            built = self.instruments.build(spec, img, settings.mixer_rule, settings.device,
                                           free_bytes=self.instruments.free_bytes)
            channels_last, reason = channels_last_choice(built.model, settings.channels_last)
            model = prepare_model(built.model, settings, channels_last)
            if settings.grad_checkpointing:
                model.set_grad_checkpointing(True)  # timm's; a model without it is an error row
            macs = self.instruments.count_macs(spec, img, settings.mixer_rule)
            self.ready = _Model(built, model, channels_last, reason, macs, self.peak())
        return self.ready

    def peak(self) -> Peak | None:
        """The job's known peak on a GPU; on a CPU a fresh one, and the larger of it and the known one."""
        known, settings = self.job.peak, self.settings
        cpu = settings.device.type == "cpu"
        if known is not None and not cpu:
            return known
        # A fresh process's first CPU matmuls can run at half speed (thread pool and clocks waking
        # up), and the run's first peak has no earlier one to fall back on: it takes the best of three.
        tries = 3 if cpu and known is None else 1
        try:
            fresh = max((self.instruments.peak(settings.device, settings.precision, settings.peak_rule,
                                               self.instruments.telemetry(settings.device)) for _ in range(tries)),
                        key=lambda p: p.tflops)
        except Exception as exc:
            if classify_failure(exc) == "sticky":
                raise StickyCudaError(error_line(exc)) from exc
            return known
        self.emit("peak", fresh)
        return fresh if known is None or fresh.tflops > known.tflops else known

    def row(self, batch: int, bench: str) -> dict[str, Any]:
        ready = self.ready
        return base_row(self.job.spec, batch, bench, self.settings, self.env, self.tf32,
                        ready.channels_last if ready else None, ready.reason if ready else "")

    def measure(self, batch: int, bench: str, rules: TimingRules, clock_factory: Callable[..., Clock]) -> dict[str, Any]:
        """One row: measured, or the failure that stopped it (StickyCudaError propagates)."""
        self.emit("start", (bench, batch))
        row = self.row(batch, bench)
        try:
            ready = self.prepare()
            row = self.row(batch, bench)
            device = self.settings.device
            clock = clock_factory(device, Work(self.job.spec.name, batch, ready.macs, bench))
            result = measure_batch(ready.model, batch, self.settings.model_img_size(self.job.spec.img_size),
                                   self.settings, ready.channels_last, clock, self.instruments.telemetry(device),
                                   self.instruments.memory(device), rules, self.remaining(), train=bench == "train")
        except Exception as exc:  # one failing measurement must not stop the run
            status = classify_failure(exc)
            if status == "sticky":
                raise StickyCudaError(error_line(exc)) from exc
            return failure_row(row, status, error_line(exc), self.ready.built.params if self.ready else None)
        if result.compile is not None:
            self.compile_s += result.compile.info.seconds
        self.clock_s += result.measurement.warmup_s + result.measurement.total_s
        fill_measurement(row, result, ready.macs, ready.peak, ready.built.params, clock)
        row["build_s"], row["build_method"] = ready.built.build_s, ready.built.method
        return row

    def run(self) -> None:
        settings, job = self.settings, self.job
        if job.threads is not None:
            torch.set_num_threads(job.threads)  # CPU workers share the cores instead of fighting over them
        with device_session(settings) as tf32:
            self.tf32 = tf32
            self.env = environment(settings.device)
            self.emit("env", self.env)
            if job.latency:
                self.emit("row", self.measure(1, "latency", settings.latency_rules(), self.instruments.latency_clock))
            self.sweep()
            self.ready = None
            free_memory(settings.device)

    def sweep(self) -> None:
        settings, job = self.settings, self.job
        state = SweepState()
        for earlier in job.prior:
            state.record(int(earlier["batch_size"]), float(earlier["images_per_sec"]),
                         float(earlier["step_time_median_ms"]) / 1e3, settings.flat_tolerance)
        batches = list(job.batches)
        for index, batch in enumerate(batches):
            row = self.measure(batch, settings.bench, settings.timing_rules(), self.instruments.clock)
            if row["status"] in MEASURED_STATUSES:
                state.record(batch, row["images_per_sec"], row["step_time_median_ms"] / 1e3, settings.flat_tolerance)
                next_batch = batches[index + 1] if index + 1 < len(batches) else None
                row["sweep_stop"] = stop_reason(state, next_batch, settings, self.remaining())
            self.emit("row", row)
            if row["sweep_stop"]:
                return


def sweep_model(job: ModelJob, instruments: Instruments, emit: Emit) -> None:
    """Measure one model's latency and batch sweep, sending ("env" | "peak" | "start" | "row", payload)
    to `emit`. A sticky CUDA error propagates as StickyCudaError, with no clean-up attempted: the
    CUDA context is dead and every further call on it would raise; only the process's end frees it."""
    _Sweep(job, instruments, emit).run()


def resume_plan(batches: Sequence[int], earlier: Mapping[int, Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[int]]:
    """Split a sweep into rows already measured (in order, they feed the stop rules) and batches still to measure.

    A batch whose earlier row ended the sweep (oom, flat, budget, ...) ends it again: nothing is left.
    """
    prior: list[Mapping[str, Any]] = []
    for index, batch in enumerate(batches):
        row = earlier.get(batch)
        if row is None:
            return prior, list(batches[index:])
        if ended_sweep(row):
            return prior, []
        prior.append(row)
    return prior, []
