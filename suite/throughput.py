"""`python -m suite.throughput`: batch-swept inference throughput and batch-1 latency of the lineup.

For each model: random weights and a random input already on the device, `eval()` +
`torch.inference_mode()`, its batch-1 latency, then each batch size of the sweep (warm-up, timed
steps, telemetry) until the sweep stops; one row per measurement goes to `results/throughput.csv`
with the median step time and its spread, images/sec, peak memory, achieved TFLOP/s from the
counted MACs, MFU against the measured and the datasheet peak, clocks, power and energy, every
setting and the environment. Each model runs in its own child process (:mod:`suite.jobs`); the
measurement itself is :mod:`suite.sweep`, its rules the presets of :mod:`suite.settings`.
"""

from __future__ import annotations

import argparse
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from suite.cli import (ArgumentParser, HelpFormatter, UsageError, add_models_argument, fail, non_negative_float,
                       non_negative_int, out_help, output_file, positive_int, positive_int_list, resolve_device,
                       resolve_devices)
from suite.jobs import ChildRunner, InProcessRunner, Outcome
from suite.launch import add_launcher_arguments, check_launcher_arguments, launch, report_launch
from suite.peaks import NAMED_DEVICES, PEAK_RULES, datasheet_peak
from suite.plan import DeviceModel, device_model, estimate_run, peak_seconds
from suite.results import (ResultsError, append_rows, device_name, done_rows, ensure_writable, part_files, part_path,
                           read_table, row_key)
from suite.settings import BENCHES, CHANNELS_LAST_RULES, PRECISION_MODES, PRESETS, Settings, default_preset, preset_help
from suite.sweep import Instruments, ModelJob, base_row, blank_or_text as _text, resume_plan
from suite.timing import PRECISIONS, default_clock
from suite.zoo import MIXER_RULES, ModelSpec, UnknownModelError, mixer_rule_used, resolve_models

PROG = "python -m suite.throughput"
DEFAULT_OUT = Path("results") / "throughput.csv"
OUT_FILE_NAME = "throughput.csv"

#: The columns that identify a measurement for --resume: what was measured, every setting, the device.
KEY_COLUMNS = ("bench", "model", "img_size", "batch_size", "precision", "precision_mode", "channels_last_rule",
               "compile", "compile_backend", "compile_mode", "cuda_graphs", "grad_checkpointing", "mixer_rule", "device",
               "device_name")

#: Rows with these statuses count as measured for --resume ('error' rows are tried again, and
#: 'crashed' ones too with --retry-crashed).
DONE_STATUSES = ("ok", "oom", "unsupported", "invalid_config", "compile_fallback", "compile_recompiled", "crashed")


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

@dataclass
class RunReport:
    """What a run did: rows it wrote and rows it found already measured (for the summary)."""

    out: Path
    written: list[dict[str, Any]] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    interrupted: bool = False
    stopped: str = ""


def key_of(spec: ModelSpec, bench: str, batch: int, settings: Settings, name: str) -> tuple[str, ...]:
    img = settings.model_img_size(spec.img_size)
    row = {"bench": bench, "model": spec.name, "img_size": img, "batch_size": batch,
           **settings.columns(), "mixer_rule": mixer_rule_used(spec, img, settings.mixer_rule),
           "device": str(settings.device), "device_name": name}
    return row_key(row, KEY_COLUMNS)


def plan_job(spec: ModelSpec, settings: Settings, done: Mapping[tuple[str, ...], dict[str, Any]], name: str,
             peak: Any) -> tuple[ModelJob | None, list[dict[str, Any]]]:
    """What is left of one model's measurements (None: nothing) and the rows already there."""
    latency_row = done.get(key_of(spec, "latency", 1, settings, name)) if settings.measures_latency else None
    earlier = {b: done[k] for b in settings.batch_sizes
               if (k := key_of(spec, settings.bench, b, settings, name)) in done}
    prior, todo = resume_plan(settings.batch_sizes, earlier)
    reused = ([latency_row] if latency_row is not None else []) + list(earlier.values())
    wants_latency = settings.measures_latency and latency_row is None
    if not todo and not wants_latency:
        return None, reused
    return ModelJob(spec, settings, tuple(todo), tuple(prior), wants_latency, peak), reused


def crashed_row(job: ModelJob, outcome: Outcome, tf32: bool) -> dict[str, Any]:
    """The row that records a child's death at the measurement it was making."""
    bench, batch = outcome.at or (("infer", job.batches[0]) if job.batches else ("latency", 1))
    env = outcome.env or {}
    row = base_row(job.spec, batch, bench, job.settings, env, tf32, None, "")
    row.update({"status": "crashed", "error": outcome.error, "sweep_stop": "crashed"})
    return row


class _Progress:
    """One progress bar over every planned measurement of the run, whatever the number of workers."""

    def __init__(self, total: int, enabled: bool, workers: int = 1) -> None:
        from tqdm import tqdm

        self.workers = workers
        self.bar = tqdm(total=total, unit="row", disable=not enabled, dynamic_ncols=True, file=sys.stderr)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)


def planned_rows(settings: Settings) -> int:
    return len(settings.batch_sizes) + (1 if settings.measures_latency else 0)


@dataclass
class _Shared:
    """What the workers of one run share: the results file, the report, one progress bar, a lock."""

    out: Path
    report: RunReport
    progress: _Progress
    per_model: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def write(self, row: dict[str, Any]) -> None:
        with self.lock:
            _write(self.out, row, self.report)

    def advance(self, rows: int) -> None:
        with self.lock:
            self.progress.bar.update(rows)


def _worker(device: torch.device, pending: queue.SimpleQueue, settings: Settings, shared: _Shared,
            done: Mapping[tuple[str, ...], dict[str, Any]], runner: Any, threads: int | None = None) -> None:
    """One device's worker: take the next model from the queue, measure it in a child bound to this
    device, until the queue is empty, the run is stopped, or this device's CUDA context is dead.
    `threads`: the CPU threads of each child (CPU workers split the cores between them)."""
    base = replace(settings, device=device)
    name = device_name(device)
    tf32 = base.precision == "tf32" and device.type == "cuda"
    peak = None
    while not shared.stop.is_set():
        try:
            spec, size = pending.get_nowait()
        except queue.Empty:
            return
        settings = replace(base, img_size=size) if size is not None else base
        job, reused = plan_job(spec, settings, done, name, peak)
        if job is not None and threads is not None:
            job = replace(job, threads=threads)
        with shared.lock:
            shared.report.reused.extend(reused)
        if job is None:
            shared.advance(shared.per_model)
            continue
        left = len(job.batches) + (1 if job.latency else 0)
        shared.advance(shared.per_model - left)
        shared.progress.bar.set_postfix_str(spec.name if shared.progress.workers == 1 else f"{device}: {spec.name}")

        def on_message(kind: str, payload: Any) -> None:
            nonlocal peak, left
            if kind == "peak":
                peak = payload if peak is None or payload.tflops > peak.tflops else peak
            elif kind == "row":
                shared.write(payload)
                ended = payload["bench"] != "latency" and bool(payload.get("sweep_stop"))
                shared.advance(left if ended else 1)
                left = 0 if ended else left - 1

        outcome = runner.run(job, on_message)
        if shared.stop.is_set():
            return  # interrupted: the child was stopped on purpose, not crashed
        if outcome.crashed:
            shared.write(crashed_row(job, outcome, tf32))
            with shared.lock:
                shared.report.crashed.append(f"{spec.name}: {outcome.error}")
            shared.progress.write(f"{spec.name}: crashed ({outcome.error}); going on with the next model")
            shared.advance(left)
            if outcome.dead_context:
                shared.report.stopped = (f"the CUDA context of {device} is unusable after {spec.name}'s sticky "
                                         f"error; rerun with --resume without --in-process to measure the rest")
                shared.stop.set()
                return


def run(specs: list[ModelSpec], settings: Settings, out: Path, *, img_sizes: Sequence[int | None] = (None,),
        devices: Sequence[torch.device] | None = None,
        resume: bool = False, resume_from: Path | None = None, retry_crashed: bool = False, progress: bool = True,
        in_process: bool = False, instruments: Instruments | None = None,
        child_timeout_s: float | None = None) -> RunReport:
    """Measure every model, each in a child process, appending each row to `out` as it arrives.

    With several `devices`, one worker per device pulls models from one queue, so two models never
    share a device; their rows go to the same file and one progress bar counts them all. `--resume`
    reads `resume_from` (default `out`) with its part files.
    """
    instruments = instruments or Instruments()
    devices = list(devices or [settings.device])
    if in_process and len(devices) > 1:
        raise ValueError("--in-process measures on one device")
    statuses = tuple(s for s in DONE_STATUSES if s != "crashed" or not retry_crashed)
    done = done_rows(resume_from or out, KEY_COLUMNS, statuses) if resume else {}
    per_model = planned_rows(settings)
    work = fitting(specs, img_sizes, lambda line: print(line, file=sys.stderr))
    shared = _Shared(out, RunReport(out), _Progress(len(work) * per_model, progress, len(devices)), per_model)
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for item in work:
        pending.put(item)
    runners = [InProcessRunner(instruments) if in_process
               else ChildRunner(instruments, child_timeout_s, echo=shared.progress.write) for _ in devices]
    try:
        if len(devices) == 1:
            _worker(devices[0], pending, settings, shared, done, runners[0])
        else:
            cpu_workers = sum(d.type == "cpu" for d in devices)
            share = max(1, torch.get_num_threads() // cpu_workers) if cpu_workers else None
            threads = [threading.Thread(target=_worker,
                                        args=(d, pending, settings, shared, done, r, share if d.type == "cpu" else None),
                                        name=f"suite-worker-{d}", daemon=True) for d, r in zip(devices, runners)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.2)
    except KeyboardInterrupt:
        shared.stop.set()
        shared.report.interrupted = True
    finally:
        shared.stop.set()
        for runner in runners:
            runner.close()
        shared.progress.bar.close()
    return shared.report


def _write(out: Path, row: dict[str, Any], report: RunReport) -> None:
    append_rows(out, [row], "throughput")
    report.written.append(row)


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

NOISE_MARK = {"noisy": "*", "very noisy": "**"}


def summary(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per model: best batch and images/sec (noisy ones marked), spread, TFLOP/s, MFU
    (measured peak, datasheet peak), memory, latency, energy, how the sweep ended."""
    import pandas as pd

    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        return "(no rows)"
    if "bench" not in frame.columns:
        frame["bench"] = "infer"
    lines = []
    marked = False
    if "img_size" not in frame.columns:
        frame["img_size"] = 0
    several = frame.groupby("model")["img_size"].nunique() > 1
    for (model, img_size), group in frame.groupby(["model", "img_size"], sort=False):
        model = f"{model} @{int(img_size)}" if several.get(model, False) else model
        sweep = group[group["bench"].fillna("infer") != "latency"]
        latency = group[group["bench"] == "latency"]
        ok = sweep[sweep["status"] == "ok"]
        stops = [s for s in sweep.get("sweep_stop", pd.Series(dtype=str)).map(_text) if s]
        line: dict[str, str] = {"model": str(model)}
        if ok.empty:
            line.update({k: "-" for k in ("best batch", "img/s", "ms/step p10-p90", "TFLOP/s", "MFU %", "peak MB")})
        else:
            best = ok.loc[ok["images_per_sec"].astype(float).idxmax()]
            mark = NOISE_MARK.get(_text(best.get("noise")), "")
            marked = marked or bool(mark)
            mfu = _fmt(best.get("mfu"), 0.01, "{:.1f}")
            if not _missing(best.get("mfu_datasheet")):
                mfu += f" ({_fmt(best.get('mfu_datasheet'), 0.01, '{:.1f}')})"
            line.update({
                "best batch": str(int(best["batch_size"])), "img/s": f"{float(best['images_per_sec']):.1f}{mark}",
                "ms/step p10-p90": f"{float(best['step_time_median_ms']):.1f} ({float(best['step_time_p10_ms']):.1f}-"
                                   f"{float(best['step_time_p90_ms']):.1f})",
                "TFLOP/s": _fmt(best.get("achieved_tflops"), 1, "{:.3f}"), "MFU %": mfu,
                "peak MB": _fmt(best.get("peak_memory_mb"), 1, "{:.0f}"),
            })
        lat = latency[latency["status"] == "ok"]
        line["lat p50/p99 ms"] = (f"{float(lat.iloc[-1]['latency_p50_ms']):.1f}/{float(lat.iloc[-1]['latency_p99_ms']):.1f}"
                                  if not lat.empty else "-")
        energy = ok["energy_j_per_image"] if "energy_j_per_image" in ok.columns else pd.Series(dtype=float)
        line["J/img"] = _fmt(energy.dropna().min() if not energy.dropna().empty else None, 1, "{:.3f}")
        line["ended"] = stops[-1] if stops else ""
        line["status"] = ",".join(sorted(set(group["status"].map(_text)) - {""}))
        lines.append(line)
    table = pd.DataFrame(lines).to_string(index=False)
    if marked:
        table += "\n* IQR over 10% of the median (noisy), ** over 25% (very noisy): repeat before trusting it"
    return table


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _fmt(value: Any, divisor: float, pattern: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else pattern.format(number / divisor)


# --------------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------------

def plan_text(specs: list[ModelSpec], settings: Settings, device: DeviceModel, instruments: Instruments,
              img_sizes: Sequence[int | None] = (None,)) -> str:
    """The plan of a run (models, batch sizes, settings) and its estimated time, as printed by --dry-run."""
    pairs = fitting(specs, img_sizes, lambda line: print(line, file=sys.stderr))
    plans, total = estimate_run(pairs, settings, device, instruments.count_macs, peak_seconds(settings, len(pairs)))
    import pandas as pd

    table = pd.DataFrame([{"model": p.model, "img": p.img_size, "GMACs": _fmt(p.macs_per_image, 1e9, "{:.2f}"),
                           "batches": ",".join(map(str, p.batches)), "ends": p.stop, "est. s": f"{p.seconds:.1f}"}
                          for p in plans]).to_string(index=False)
    settings_line = ", ".join(f"{k}={v}" for k, v in settings.columns().items())
    return (f"plan: {len(pairs)} model run(s) on {settings.device} with preset {settings.preset}\n{settings_line}\n\n"
            f"{table}\n\n{device.describe()}\nestimated total: {total / 60:.1f} min ({total:.0f} s)")


def dry_run_device(settings: Settings, peak_of: str | None, instruments: Instruments) -> DeviceModel:
    """The device model of a dry run: a named GPU's datasheet peak, or the device's own measured peak."""
    if peak_of:
        name = NAMED_DEVICES[peak_of]
        figure, source = datasheet_peak(name, settings.precision) or (None, "")
        if figure is None:
            raise UsageError(f"no datasheet peak for {peak_of} at {settings.precision}")
        return device_model("cuda", name, figure, source)
    from suite.peaks import measure_peak
    from suite.telemetry import NullTelemetry

    peak = measure_peak(settings.device, settings.precision, default_clock(settings.device),
                        rule=settings.peak_rule, telemetry=NullTelemetry())
    return device_model(settings.device.type, device_name(settings.device), peak.tflops, f"measured, {peak.method}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int] | str:
    """`--img-size`: '224,448' or 'scaling' (the preset's list)."""
    return "scaling" if text.strip() == "scaling" else positive_int_list(text)


def image_sides(args: argparse.Namespace, settings: Settings) -> list[int | None]:
    """The image sides of the run: each model's native one by default."""
    if args.img_size is None:
        return [None]
    if args.img_size == "scaling":
        return list(PRESETS[settings.preset].scaling_sizes)
    return list(args.img_size)


def fitting(specs: list[ModelSpec], sides: Sequence[int | None], note: Callable[[str], None]) -> list[tuple]:
    """(spec, side) pairs whose side the model's patch divides; the others are named and left out."""
    pairs = []
    for side in sides:
        for spec in specs:
            patch = spec.arch_dict.get("patch")
            if side is not None and patch and side % patch:
                note(f"{spec.name} skips {side} px: not a multiple of its {patch}-pixel patch")
                continue
            pairs.append((spec, side))
    return pairs


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


#: How each preset field is parsed on the command line.
_FIELD_TYPES = {
    "precision": None, "batch_sizes": positive_int_list, "warmup_steps": non_negative_int,
    "warmup_s": non_negative_float, "min_steps": positive_int, "min_time_s": non_negative_float,
    "max_time_s": non_negative_float, "model_budget_s": non_negative_float, "flat_tolerance": non_negative_float,
    "flat_patience": non_negative_int, "step_cap_s": non_negative_float, "latency_steps": non_negative_int,
    "latency_time_s": non_negative_float, "peak_rule": None,
}
_FIELD_CHOICES = {"precision": PRECISIONS, "peak_rule": PEAK_RULES}


def build_parser() -> ArgumentParser:
    presets = "\n".join(f"  {name:<6} {preset.description}" for name, preset in PRESETS.items())
    parser = ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description=(
            "Batch-swept inference throughput and batch-1 latency of the lineup (random weights, synthetic\n"
            "input on the device), each model in its own child process. One row per measurement goes to the\n"
            "CSV: median step time with its spread and a noise flag, images/sec, peak memory, achieved TFLOP/s\n"
            "from counted MACs, MFU against the measured and the datasheet matmul peak, SM clock, temperature,\n"
            "power and energy per image (NVIDIA), every setting and the environment.\n\n"
            f"Presets (--preset; the default follows the device):\n{presets}\n\n"
            "Try --dry-run first: it prints the plan and its estimated time and measures nothing."),
    )
    add_models_argument(parser)
    parser.add_argument("--bench", choices=BENCHES, default="infer",
                        help="infer: forward passes (and a batch-1 latency row per model); train: the paper's "
                             "pre-training step (forward, cross-entropy, backward, global-norm clip at 1, AdamW)")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="with --bench train: timm's gradient checkpointing through the blocks (recorded)")
    parser.add_argument("--device", default=None,
                        help="auto (cuda if available, else cpu), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--devices", default=None,
                        help="several devices, one worker each pulling models from one queue: all (every GPU), "
                             "or a list such as cuda:0,cuda:2 (cpu,cpu runs two CPU workers, whose timings then "
                             "contend)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="the measurement rules to start from (default: gpu on CUDA, cpu on a CPU); "
                             "'paper' is the paper's full 32..8192 sweep")
    for name, flag in _preset_flags():
        kwargs: dict[str, Any] = {"default": None, "help": preset_help(name), "dest": name,
                                  "metavar": _metavar(name)}
        if _FIELD_TYPES[name] is not None:
            kwargs["type"] = _FIELD_TYPES[name]
        if name in _FIELD_CHOICES:
            kwargs["choices"] = _FIELD_CHOICES[name]
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--mode", choices=PRECISION_MODES, default="autocast",
                        help="for bf16/fp16: autocast (fp32 weights, low-precision ops where safe) or pure "
                             "(weights and input cast to the dtype)")
    parser.add_argument("--channels-last", choices=CHANNELS_LAST_RULES, default="auto",
                        help="NHWC memory format; auto = on when the model has convolutions other than a patch "
                             "embedding (BiT, hybrids' stems, HaloNet, EfficientNet), recorded with its reason")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each batch size afresh and static; compile seconds are recorded, "
                             "not timed, and not charged to the model budget")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (with --compile)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture one forward in a CUDA graph and time its replay")
    parser.add_argument("--img-size", type=parse_sizes, default=None,
                        help="input sides, comma-separated, each measured for every model (the report draws cost "
                             "against resolution), or 'scaling': " + "; ".join(
                                 f"{name} {','.join(map(str, preset.scaling_sizes))}"
                                 for name, preset in PRESETS.items()) + " (default: each model's native size)")
    parser.add_argument("--mixer-rule", choices=MIXER_RULES, default="paper",
                        help="Mixer token-MLP width away from the native size: paper (scales with tokens) or fixed (timm)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=out_help(OUT_FILE_NAME, "results file (rows are appended)"))
    parser.add_argument("--resume", action="store_true",
                        help="skip measurements already in --out (any status but error; crashed too unless "
                             "--retry-crashed)")
    parser.add_argument("--retry-crashed", action="store_true", help="with --resume: measure crashed rows again")
    parser.add_argument("--shard", type=parse_shard, default=None,
                        help="i/n: measure only models i, i+n, ... of the selection (1-based), to split across processes")
    parser.add_argument("--in-process", action="store_true",
                        help="run every model in this process instead of a child each (debugging; a sticky CUDA "
                             "error then ends the run)")
    parser.add_argument("--child-timeout", type=non_negative_float, default=1800.0,
                        help="seconds a model's child may send nothing before it is killed and recorded as crashed "
                             "(0: no limit)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (models, batch sizes, settings) and its estimated time, then exit")
    parser.add_argument("--peak-of", choices=tuple(NAMED_DEVICES), default=None,
                        help="with --dry-run: estimate for this GPU's datasheet peak instead of measuring the device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_launcher_arguments(parser)
    return parser


def _metavar(name: str) -> str | None:
    if name in _FIELD_CHOICES:
        return None
    if name == "batch_sizes":
        return "N,N,..."
    if name.endswith("_s"):
        return "SECONDS"
    return "FRACTION" if name == "flat_tolerance" else "N"


def _preset_flags() -> list[tuple[str, str]]:
    from suite.settings import preset_fields

    return [(f.name, f.metadata["flag"]) for f in preset_fields()]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Turn flags into Settings on top of the preset; UsageError on a bad combination."""
    if args.peak_of and not args.dry_run:
        raise UsageError("--peak-of is for --dry-run (a real run measures its own device's peak)")
    if args.retry_crashed and not args.resume:
        raise UsageError("--retry-crashed goes with --resume")
    if args.grad_checkpointing and args.bench != "train":
        raise UsageError("--grad-checkpointing is for --bench train (inference keeps no activations)")
    if args.bench == "train":
        if args.cuda_graphs:
            raise UsageError("--bench train cannot use --cuda-graphs (an optimizer step in a captured graph is not "
                             "what a training run does); drop --cuda-graphs")
        if args.precision == "fp16" and args.mode == "pure":
            raise UsageError("--bench train in fp16 needs --mode autocast (a GradScaler keeps fp32 weights); "
                             "pure fp16 weights cannot be trained this way")
        if args.latency_steps:
            raise UsageError("--latency-steps is for --bench infer; a training run has no latency row")
    if args.devices and args.device:
        raise UsageError("give --device or --devices, not both")
    if args.devices:
        if args.in_process:
            raise UsageError("--in-process measures on one device; drop --devices")
        devices = resolve_devices(args.devices)
        if len({d.type for d in devices}) > 1:
            raise UsageError("--devices mixes CPU and GPU workers; their presets differ, run them separately")
        args.device_list = devices
    else:
        args.device_list = None
    device = (torch.device("cuda") if args.peak_of
              else args.device_list[0] if args.device_list else resolve_device(args.device or "auto"))
    gpu = device.type == "cuda"
    preset = args.preset or default_preset(device)
    overrides = {name: getattr(args, name) for name, _ in _preset_flags()}
    settings = Settings.from_preset(
        device, preset, bench=args.bench, grad_checkpointing=args.grad_checkpointing, precision_mode=args.mode, channels_last=args.channels_last, compile=args.compile,
        compile_backend=args.compile_backend, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs,
        mixer_rule=args.mixer_rule, **overrides)
    if settings.precision == "tf32" and not gpu:
        raise UsageError("--precision tf32 needs a CUDA device (TF32 is an NVIDIA tensor-core format)")
    if args.cuda_graphs and not gpu:
        raise UsageError("--cuda-graphs needs a CUDA device")
    if args.compile:
        from torch import _dynamo

        known = set(_dynamo.list_backends(exclude_tags=())) | {"inductor"}
        if args.compile_backend not in known:
            raise UsageError(f"unknown --compile-backend {args.compile_backend!r}; torch has {', '.join(sorted(known))}")
    return settings


def main(argv: list[str] | None = None, instruments: Instruments | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    launched_instruments = instruments
    instruments = instruments or Instruments()
    try:
        check_launcher_arguments(args)
        if args.launcher != "none" and args.devices:
            raise UsageError(f"--launcher {args.launcher} runs one job per model on the device its job gets; "
                             f"drop --devices")
        specs = shard(resolve_models(args.models), args.shard)
        settings = settings_from_args(args)
        if args.dry_run:
            if not specs:
                raise UsageError("the selection has no models")
            print(plan_text(specs, settings, dry_run_device(settings, args.peak_of, instruments), instruments,
                            image_sides(args, settings)))
            return 0
        out = output_file(args.out, OUT_FILE_NAME)
        ensure_writable(out)
        if args.resume:
            done_rows(out, KEY_COLUMNS, DONE_STATUSES)
    except (UnknownModelError, ValueError, ResultsError) as exc:
        fail(PROG, str(exc))
    if not specs:
        fail(PROG, f"shard {args.shard[0]}/{args.shard[1]} has no models (the selection has fewer)")
    if args.launcher != "none":
        return _launched(args, argv, specs, out, launched_instruments)
    started = time.perf_counter()
    try:
        report = run(specs, settings, part_path(out, args.part) if args.part else out,
                     img_sizes=image_sides(args, settings), devices=args.device_list,
                     resume=args.resume, resume_from=out, retry_crashed=args.retry_crashed,
                     progress=not args.no_progress, in_process=args.in_process, instruments=instruments,
                     child_timeout_s=args.child_timeout or None)
    except ResultsError as exc:
        fail(PROG, str(exc))
    elapsed = time.perf_counter() - started
    print(summary(report.reused + report.written))
    print(f"\n{len(report.written)} row(s) written to {out}, {len(report.reused)} already there; "
          f"{', '.join(map(str, args.device_list or [settings.device]))} {settings.precision} ({settings.mode}), "
          f"preset {settings.preset}; {elapsed:.0f} s")
    for line in report.crashed:
        print(f"crashed: {line}", file=sys.stderr)
    if report.stopped:
        print(f"stopped: {report.stopped}", file=sys.stderr)
        return 1
    if report.interrupted:
        print(f"interrupted: {out} holds every row written so far; rerun with --resume to finish", file=sys.stderr)
        return 130
    return 0


def _launched(args: argparse.Namespace, argv: list[str], specs: list[ModelSpec], out: Path,
              instruments: Instruments | None) -> int:
    """--launcher local|slurm: a job per model; then the summary of what the table holds for them."""
    names = [spec.name for spec in specs]
    launched = launch(args, "suite.throughput", argv, names, out, instruments, progress=not args.no_progress)
    if args.no_wait:
        return 0
    try:
        table = read_table(out) if out.exists() or part_files(out) else None
    except ResultsError as exc:
        fail(PROG, str(exc))
    if table is not None and len(table):
        print(summary(table[table["model"].isin(names)].to_dict("records")))
    return report_launch(launched, names, out)


if __name__ == "__main__":
    raise SystemExit(main())
