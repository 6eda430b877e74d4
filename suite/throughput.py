"""`python -m suite.throughput`: batch-swept inference throughput of the lineup, with MFU.

For each model and each batch size of the sweep: random weights and a random input already on the
device, `eval()` + `torch.inference_mode()`, a warm-up at that batch size, then timed steps (CUDA
events on GPU, a monotonic clock on CPU; see :mod:`suite.timing`). Each (model, batch) becomes one
row of `results/throughput.csv` with the median step time, its spread, images/sec, peak memory,
achieved TFLOP/s from the counted MACs and the model-FLOPs utilization against a matmul peak
measured on the same device at the same precision, plus every setting and the environment.

Timing does not depend on weight values, so models are built on the meta device, materialized
with `to_empty` and filled with cheap scaled random values (never zeros); see :func:`build_for_timing`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.cli import (ArgumentParser, HelpFormatter, add_models_argument, error_line, fail,
                       non_negative_float, non_negative_int, positive_int, positive_int_list, resolve_device)
from suite.counting import macs_per_image
from suite.results import SCHEMAS, ResultsError, append_rows, done_rows, ensure_writable, environment, row_key
from suite.timing import (LOW_PRECISION_DTYPES, PRECISIONS, Timing, measure_peak_tflops, precision_flags,
                          time_callable)
from suite.zoo import MIXER_RULES, ModelSpec, UnknownModelError, build_model, mixer_rule_used, resolve_models

PROG = "python -m suite.throughput"
DEFAULT_OUT = Path("results") / "throughput.csv"
OUT_FILE_NAME = "throughput.csv"

#: The paper's sweep (32 .. 8192) on GPU; a short one on CPU so the whole lineup finishes.
GPU_BATCH_SIZES = tuple(2**k for k in range(5, 14))
CPU_BATCH_SIZES = (1, 2, 4, 8)

#: The columns that identify a measurement for --resume: the model, every setting, the batch, the device.
KEY_COLUMNS = ("model", "img_size", "batch_size", "precision", "precision_mode", "channels_last", "compile",
               "cuda_graphs", "mixer_rule", "device", "device_name")

#: Rows with these statuses count as measured for --resume; error rows are tried again.
DONE_STATUSES = ("ok", "oom")

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Settings:
    """Everything that changes a measurement; every field is written into every row."""

    device: torch.device
    precision: str = "fp32"
    precision_mode: str = "autocast"
    channels_last: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False
    img_size: int | None = None
    mixer_rule: str = "paper"
    batch_sizes: tuple[int, ...] = CPU_BATCH_SIZES
    warmup: int = 1
    repeats: int = 5
    min_time_s: float = 0.0
    model_budget_s: float = 0.0
    stop_when_flat: bool = True
    flat_tolerance: float = 0.02

    @property
    def mode(self) -> str:
        """'autocast' or 'pure' for bf16/fp16; 'none' for fp32/tf32 where there is nothing to choose."""
        return self.precision_mode if self.precision in LOW_PRECISION_DTYPES else "none"

    def uses_channels_last(self, spec: ModelSpec) -> bool:
        if self.channels_last == "auto":
            return spec.family == "conv"
        return self.channels_last == "on"

    def model_img_size(self, spec: ModelSpec) -> int:
        return int(self.img_size or spec.img_size)


# --------------------------------------------------------------------------------------------------
# Building a model for timing
# --------------------------------------------------------------------------------------------------

@dataclass
class BuiltModel:
    model: nn.Module
    build_s: float
    method: str
    params: int


def build_for_timing(spec: ModelSpec, img_size: int, mixer_rule: str, device: torch.device,
                     seed: int = 0) -> BuiltModel:
    """Build `spec` on `device` with random weights, fast.

    timm's random init of a 900M-parameter model takes minutes on two CPU cores; timing does not
    depend on weight values, so the model is built on the meta device, materialized with
    `to_empty` and filled by :func:`fill_random_`. A model with buffers other than BatchNorm
    statistics (e.g. index tables computed at init) is built the ordinary way instead.
    """
    start = time.perf_counter()
    meta = build_model(spec, img_size=img_size, mixer_rule=mixer_rule, device="meta")
    params = sum(p.numel() for p in meta.parameters())
    check_fits(meta, device)
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


def check_fits(meta_model: nn.Module, device: torch.device) -> None:
    """Refuse (as out-of-memory) a model whose fp32 weights alone exceed 90% of free device memory."""
    needed = sum(p.numel() * p.element_size() for p in meta_model.parameters())
    free = free_memory_bytes(device)
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


def count_macs(spec: ModelSpec, img_size: int, mixer_rule: str) -> int | None:
    """MACs per image from the suite's counter (matmul/conv, attention included); None if it cannot."""
    try:
        return int(macs_per_image(spec, img_size, mixer_rule))
    except Exception:  # a counting failure must not cost the timing row
        return None


# --------------------------------------------------------------------------------------------------
# Measuring one (model, batch)
# --------------------------------------------------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, a failed CPU allocation, or a MemoryError."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "failed to allocate" in text)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _autocast(settings: Settings) -> Any:
    if settings.mode != "autocast":
        return nullcontext()
    return torch.autocast(device_type=settings.device.type, dtype=LOW_PRECISION_DTYPES[settings.precision],
                          cache_enabled=not settings.cuda_graphs)


def prepare_model(model: nn.Module, spec: ModelSpec, settings: Settings) -> nn.Module:
    """Cast (pure low precision), set the memory format, compile: what the settings ask for."""
    if settings.mode == "pure":
        model = model.to(LOW_PRECISION_DTYPES[settings.precision])
    if settings.uses_channels_last(spec):
        model = model.to(memory_format=torch.channels_last)
    if settings.compile:
        model = torch.compile(model)
    return model


def make_input(batch: int, img_size: int, spec: ModelSpec, settings: Settings) -> torch.Tensor:
    """A random (never zero) image batch on the device, in the dtype and memory format the model takes."""
    dtype = LOW_PRECISION_DTYPES[settings.precision] if settings.mode == "pure" else torch.float32
    x = torch.randn(batch, 3, img_size, img_size, device=settings.device, dtype=dtype)
    if settings.uses_channels_last(spec):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_step(model: nn.Module, x: torch.Tensor, cuda_graphs: bool) -> Callable[[], object]:
    """The callable that is timed: one forward pass, or one replay of its captured CUDA graph."""
    def forward() -> object:
        return model(x)

    if not cuda_graphs:
        return forward
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay


def measure(model: nn.Module, spec: ModelSpec, batch: int, settings: Settings,
            max_time_s: float | None) -> tuple[Timing, float | None]:
    """Time `model` at `batch`; return the timing and the peak device memory in MB (CUDA only)."""
    device = settings.device
    x = make_input(batch, settings.model_img_size(spec), spec, settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), _autocast(settings):
        step = make_step(model, x, settings.cuda_graphs)
        timing = time_callable(step, device, warmup=settings.warmup, repeats=settings.repeats,
                               min_time_s=settings.min_time_s, max_time_s=max_time_s)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return timing, peak


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------

def base_row(spec: ModelSpec, batch: int, settings: Settings, env: dict[str, Any], tf32: bool) -> dict[str, Any]:
    """The identifying and settings columns of one row (status and measurements come later)."""
    img = settings.model_img_size(spec)
    return {
        "model": spec.name, "group": spec.group, "family": spec.family, "timm_name": spec.timm_name or "",
        "build_source": spec.build_source, "img_size": img, "batch_size": batch,
        "precision": settings.precision, "precision_mode": settings.mode, "tf32": tf32,
        "channels_last": settings.uses_channels_last(spec), "compile": settings.compile,
        "cuda_graphs": settings.cuda_graphs, "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "mixer_rule": mixer_rule_used(spec, img, settings.mixer_rule),
        "warmup": settings.warmup, "repeats": settings.repeats, "min_time_s": settings.min_time_s,
        "model_budget_s": settings.model_budget_s, "stop_when_flat": settings.stop_when_flat,
        "status": "", "error": "", "sweep_stop": "",
        **env,
    }


def fill_measurement(row: dict[str, Any], timing: Timing, peak_mb: float | None, macs: int | None,
                     peak_tflops: float | None, params: int) -> None:
    """Add the measured columns (ours and timm benchmark.py's) to a row."""
    batch = row["batch_size"]
    images_per_sec = batch / timing.median_s
    achieved = 2.0 * macs * images_per_sec / 1e12 if macs else None
    row.update({
        "status": "ok",
        "timed_steps": timing.steps,
        "step_time_median_ms": timing.median_s * 1e3,
        "step_time_p10_ms": timing.p10_s * 1e3,
        "step_time_p90_ms": timing.p90_s * 1e3,
        "step_time_iqr_ms": timing.iqr_s * 1e3,
        "step_time_mean_ms": timing.mean_s * 1e3,
        "images_per_sec": images_per_sec,
        "peak_memory_mb": peak_mb,
        "process_max_rss_mb": _max_rss_mb(),
        "macs_per_image": macs,
        "achieved_tflops": achieved,
        "peak_tflops": peak_tflops,
        "mfu": achieved / peak_tflops if achieved and peak_tflops else None,
        "params": params,
        "infer_samples_per_sec": round(images_per_sec, 2),
        "infer_step_time": round(timing.median_s * 1e3, 3),
        "infer_batch_size": batch,
        "infer_img_size": row["img_size"],
        "infer_gmacs": round(macs / 1e9, 2) if macs else None,
        "param_count": round(params / 1e6, 2),
    })


def _max_rss_mb() -> float:
    """The process's resident-memory high-water mark so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------

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


def stop_reason(state: SweepState, next_batch: int | None, settings: Settings, remaining_s: float | None) -> str:
    """Why the sweep ends after the batch just measured ('' to go on)."""
    if next_batch is None:
        return "last"
    if settings.stop_when_flat and state.flat_steps >= 1:
        return "flat"
    if remaining_s is not None and state.last_step_s is not None and state.last_batch:
        estimate = state.last_step_s * next_batch / state.last_batch
        if estimate * (settings.warmup + 3) > remaining_s:
            return "budget"
    return ""


@dataclass
class RunReport:
    """What a run did: rows it wrote and rows it found already measured (for the summary)."""

    out: Path
    written: list[dict[str, Any]] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


def run(specs: list[ModelSpec], settings: Settings, out: Path, *, resume: bool = False,
        progress: bool = True) -> RunReport:
    """Sweep every model over the batch sizes, appending one row per (model, batch) to `out`."""
    from tqdm import tqdm

    device = settings.device
    env = environment(device)
    done = done_rows(out, KEY_COLUMNS, DONE_STATUSES) if resume else {}
    report = RunReport(out)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bar = tqdm(total=len(specs) * len(settings.batch_sizes), unit="batch", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    try:
        with precision_flags(settings.precision, device) as tf32:
            for spec in specs:
                bar.set_postfix_str(spec.name)
                _sweep_model(spec, settings, env, tf32, out, done, report, bar)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
    return report


#: The largest matmul peak measured so far in this process, per (device, precision).
_best_peaks: dict[tuple[str, str], float] = {}


def peak_for_model(device: torch.device, precision: str) -> float | None:
    """The matmul peak a model's MFU is divided by: an upper bound of what the device sustains.

    A GPU is measured once per process. A CPU is measured again before each model, since a shared
    machine's load changes from minute to minute, and the largest figure seen so far in the run is
    used: contention only ever slows a measurement down, so the largest one is the closest to what
    the hardware can do, and MFU stays a fraction of it. The run's first CPU peak is the best of three.
    """
    key = (str(device), precision)
    cpu = device.type == "cpu"
    # A fresh process's first CPU matmuls can run at half speed (thread pool and clocks waking up),
    # and the first peak has no earlier one to fall back on: it takes the best of three.
    tries = 3 if cpu and key not in _best_peaks else 1
    try:
        fresh = max(measure_peak_tflops(device, precision, fresh=cpu) for _ in range(tries))
    except RuntimeError:
        return None
    _best_peaks[key] = max(fresh, _best_peaks.get(key, 0.0))
    return _best_peaks[key]


def _sweep_model(spec: ModelSpec, settings: Settings, env: dict[str, Any], tf32: bool, out: Path,
                 done: dict[tuple[str, ...], dict[str, Any]], report: RunReport, bar: Any) -> None:
    """One model's sweep: build lazily (only if a batch is missing), measure, decide to go on or stop."""
    batches = list(settings.batch_sizes)
    state = SweepState()
    built: BuiltModel | None = None
    model: nn.Module | None = None
    macs: int | None = None
    peak: float | None = None
    started = time.perf_counter()
    img = settings.model_img_size(spec)
    try:
        for index, batch in enumerate(batches):
            next_batch = batches[index + 1] if index + 1 < len(batches) else None
            row = base_row(spec, batch, settings, env, tf32)
            previous = done.get(row_key(row, KEY_COLUMNS))
            if previous is not None:
                report.reused.append(previous)
                bar.update(1)
                if previous.get("status") == "oom" or _text(previous.get("sweep_stop")) not in ("", "last"):
                    bar.update(len(batches) - index - 1)
                    return
                state.record(batch, float(previous["images_per_sec"]),
                             float(previous["step_time_median_ms"]) / 1e3, settings.flat_tolerance)
                continue
            remaining = None
            try:
                if built is None:
                    built = build_for_timing(spec, img, settings.mixer_rule, settings.device)
                    model = prepare_model(built.model, spec, settings)
                    macs = count_macs(spec, img, settings.mixer_rule)
                    peak = peak_for_model(settings.device, settings.precision)
                    row["build_s"], row["build_method"] = built.build_s, built.method
                if settings.model_budget_s > 0:
                    remaining = max(0.0, settings.model_budget_s - (time.perf_counter() - started))
                timing, peak_mb = measure(model, spec, batch, settings, remaining)
            except Exception as exc:  # one failing model must not stop the run
                row["status"] = "oom" if is_out_of_memory(exc) else "error"
                row["error"] = error_line(exc)
                row["sweep_stop"] = row["status"]
                row["params"] = built.params if built else None
                _write(out, row, report)
                bar.update(len(batches) - index)
                return
            fill_measurement(row, timing, peak_mb, macs, peak, built.params)
            row.setdefault("build_s", built.build_s)
            row.setdefault("build_method", built.method)
            state.record(batch, row["images_per_sec"], timing.median_s, settings.flat_tolerance)
            if settings.model_budget_s > 0:
                remaining = max(0.0, settings.model_budget_s - (time.perf_counter() - started))
            row["sweep_stop"] = stop_reason(state, next_batch, settings, remaining)
            _write(out, row, report)
            bar.update(1)
            if row["sweep_stop"]:
                bar.update(len(batches) - index - 1)
                return
    finally:
        del model, built
        free_memory(settings.device)


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _write(out: Path, row: dict[str, Any], report: RunReport) -> None:
    missing = [c for c in SCHEMAS["throughput"] if c not in row]
    for column in missing:
        row[column] = None
    append_rows(out, [row])
    report.written.append(row)


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

def summary_table(rows: Iterable[dict[str, Any]]) -> str:
    """One line per model: best batch and images/sec, its spread, TFLOP/s, MFU, memory, how it ended."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return "(no rows)"
    lines = []
    for model, group in frame.groupby("model", sort=False):
        ok = group[group["status"] == "ok"]
        stops = [s for s in group.get("sweep_stop", pd.Series(dtype=str)).map(_text) if s]
        end = stops[-1] if stops else ""
        if ok.empty:
            lines.append({"model": model, "best batch": "-", "img/s": "-", "ms/step p10-p90": "-",
                          "GMACs": "-", "TFLOP/s": "-", "MFU %": "-", "peak MB": "-", "ended": end,
                          "status": ",".join(sorted(set(group["status"])))})
            continue
        best = ok.loc[ok["images_per_sec"].astype(float).idxmax()]
        lines.append({
            "model": model, "best batch": int(best["batch_size"]), "img/s": f"{float(best['images_per_sec']):.1f}",
            "ms/step p10-p90": f"{float(best['step_time_median_ms']):.1f} ({float(best['step_time_p10_ms']):.1f}-"
                               f"{float(best['step_time_p90_ms']):.1f})",
            "GMACs": _fmt(best.get("macs_per_image"), 1e9, "{:.2f}"),
            "TFLOP/s": _fmt(best.get("achieved_tflops"), 1, "{:.3f}"),
            "MFU %": _fmt(best.get("mfu"), 0.01, "{:.1f}"),
            "peak MB": _fmt(best.get("peak_memory_mb"), 1, "{:.0f}"),
            "ended": end, "status": ",".join(sorted(set(group["status"]))),
        })
    return pd.DataFrame(lines).to_string(index=False)


def _fmt(value: Any, divisor: float, pattern: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else pattern.format(number / divisor)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 1 <= i <= n: this process takes models i, i+n, i+2n, ... (1-based)."""
    index, slash, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 1/4, got {text!r}") from None
    if not slash or n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected i/n with 1 <= i <= n, got {text!r}")
    return i, n


def shard(specs: list[ModelSpec], part: tuple[int, int] | None) -> list[ModelSpec]:
    if part is None:
        return specs
    i, n = part
    return specs[i - 1::n]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description=(
            "Batch-swept inference throughput of the lineup (random weights, synthetic input on the device).\n"
            "One row per (model, batch) goes to the CSV: median step time with p10/p90/IQR, images/sec,\n"
            "peak memory (CUDA), achieved TFLOP/s from counted MACs and MFU against a matmul peak measured\n"
            "on the same device and precision, every setting and the environment.\n\n"
            "Defaults depend on the device: GPU sweeps 32..8192 with 10 warm-up steps, >= 50 timed steps and\n"
            ">= 1 s per batch; CPU sweeps 1,2,4,8 with 1 warm-up and 5 timed steps, a 10 s budget per model\n"
            "and stops a sweep once images/sec stops improving, so '--models all' ends in ~10 minutes."),
    )
    add_models_argument(parser)
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (TF32 off), tf32 (fp32 weights, TF32 matmul/conv on; CUDA only), bf16 or fp16")
    parser.add_argument("--mode", choices=("autocast", "pure"), default="autocast",
                        help="for bf16/fp16: autocast (fp32 weights, low-precision ops where safe) or pure "
                             "(weights and input cast to the dtype)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                        help="NHWC memory format; auto = on for convolutional models")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time is not timed)")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture one forward in a CUDA graph and time its replay")
    parser.add_argument("--img-size", type=positive_int, default=None, help="input side (default: each model's native size)")
    parser.add_argument("--mixer-rule", choices=MIXER_RULES, default="paper",
                        help="Mixer token-MLP width away from the native size: paper (scales with tokens) or fixed (timm)")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=None,
                        help="comma-separated sweep (default: 32,64,...,8192 on GPU; 1,2,4,8 on CPU)")
    parser.add_argument("--warmup", type=non_negative_int, default=None, help="untimed steps per batch (default: GPU 10, CPU 1)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed steps per batch, at least (default: GPU 50, CPU 5)")
    parser.add_argument("--min-time", type=non_negative_float, default=None,
                        help="keep timing until this many seconds were spent (default: GPU 1, CPU 0)")
    parser.add_argument("--model-budget", type=non_negative_float, default=None,
                        help="seconds per model (build + sweep) after which larger batches are skipped and timing "
                             "stops at 3 steps; 0 = no limit (default: GPU 0, CPU 10)")
    parser.add_argument("--stop-when-flat", action=argparse.BooleanOptionalAction, default=None,
                        help="end a model's sweep at the first batch that does not beat the best images/sec by 2%% "
                             "(default: on for CPU, off for GPU, which sweeps like the paper)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help=f"CSV file to append to, or a folder (then FOLDER/{OUT_FILE_NAME})")
    parser.add_argument("--resume", action="store_true",
                        help="skip (model, settings, batch) rows already in --out with status ok or oom")
    parser.add_argument("--shard", type=parse_shard, default=None,
                        help="i/n: measure only models i, i+n, ... of the selection (1-based), to split across processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Turn flags into Settings, filling device-dependent defaults; ValueError on a bad combination."""
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if args.precision == "tf32" and not gpu:
        raise ValueError("--precision tf32 needs a CUDA device (TF32 is an NVIDIA tensor-core format)")
    if args.cuda_graphs and not gpu:
        raise ValueError("--cuda-graphs needs a CUDA device")

    def pick(value: Any, on_gpu: Any, on_cpu: Any) -> Any:
        return value if value is not None else (on_gpu if gpu else on_cpu)

    return Settings(
        device=device, precision=args.precision, precision_mode=args.mode, channels_last=args.channels_last,
        compile=args.compile, cuda_graphs=args.cuda_graphs, img_size=args.img_size, mixer_rule=args.mixer_rule,
        batch_sizes=tuple(pick(args.batch_sizes, GPU_BATCH_SIZES, CPU_BATCH_SIZES)),
        warmup=pick(args.warmup, 10, 1), repeats=pick(args.repeats, 50, 5), min_time_s=pick(args.min_time, 1.0, 0.0),
        model_budget_s=pick(args.model_budget, 0.0, 10.0), stop_when_flat=pick(args.stop_when_flat, False, True),
    )


def output_path(text: str) -> Path:
    """--out as a file path: a folder (existing, or written with a trailing slash) gets throughput.csv."""
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        path = path / OUT_FILE_NAME
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        specs = shard(resolve_models(args.models), args.shard)
        settings = settings_from_args(args)
        out = output_path(args.out)
        ensure_writable(out)
        if args.resume:
            done_rows(out, KEY_COLUMNS, DONE_STATUSES)
    except (UnknownModelError, ValueError, ResultsError) as exc:
        fail(PROG, str(exc))
    if not specs:
        fail(PROG, f"shard {args.shard[0]}/{args.shard[1]} has no models (the selection has fewer)")
    started = time.perf_counter()
    try:
        report = run(specs, settings, out, resume=args.resume, progress=not args.no_progress)
    except ResultsError as exc:
        fail(PROG, str(exc))
    elapsed = time.perf_counter() - started
    print(summary_table(report.reused + report.written))
    print(f"\n{len(report.written)} row(s) written to {out}, {len(report.reused)} already there; "
          f"{settings.device} {settings.precision} ({settings.mode}); {elapsed:.0f} s")
    if report.interrupted:
        print(f"interrupted: {out} holds every row written so far; rerun with --resume to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
