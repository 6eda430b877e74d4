"""Throughput settings and the named presets they start from, each default written once.

A preset is a complete set of measurement rules for one kind of machine; a flag overrides one
field. The command line's help text is generated from :data:`PRESETS`, so a default is stated in
exactly one place. Every field of :class:`Settings` goes into every result row.

- `cpu`: the default on a CPU. A short sweep (1, 2, 4, 8), a few steps per batch and a 10 s
  budget per model, so the whole lineup ends in about ten minutes on two cores.
- `gpu`: the default on CUDA. bf16 autocast (the paper's TPU-v3 computes in bf16; timm's published
  GPU tables are mixed precision), the paper's batch sizes 32..8192 cut short once images/sec has
  stopped improving (under 3% over two doublings) or a step exceeds a second, a sustained matmul
  peak, and a per-model budget, so the whole lineup ends in about 15 minutes on one H100/H200.
- `paper`: the paper's full sweep 32..8192 in bf16 with no early stop and no budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from suite.timing import LOW_PRECISION_DTYPES, TimingRules

#: What --bench measures: inference (with a batch-1 latency row per model) or a training step.
BENCHES = ("infer", "train")
CHANNELS_LAST_RULES = ("auto", "on", "off")
PRECISION_MODES = ("autocast", "pure")


def _rule(help_text: str, flag: str | None = None) -> Any:
    return field(metadata={"help": help_text, "flag": flag})


@dataclass(frozen=True)
class Preset:
    """The measurement rules of one kind of machine (see the module docstring)."""

    description: str = field(metadata={"help": "", "flag": None})
    precision: str = _rule("fp32 (TF32 off), tf32 (fp32 weights, TF32 tensor cores; CUDA only), bf16 or fp16",
                           "--precision")
    batch_sizes: tuple[int, ...] = _rule("the sweep, comma-separated", "--batch-sizes")
    warmup_steps: int = _rule("untimed steps per batch, at least", "--warmup")
    warmup_s: float = _rule("untimed seconds per batch after the first step, at least", "--warmup-time")
    min_steps: int = _rule("timed steps per batch, at least", "--repeats")
    min_time_s: float = _rule("timed seconds per batch, at least", "--min-time")
    max_time_s: float = _rule("timed seconds per batch, at most (0: no limit; never fewer than 3 steps)",
                              "--max-time")
    model_budget_s: float = _rule("seconds per model (build, sweep and latency) after which larger batches are "
                                  "skipped and timing stops at 3 steps; 0: no limit", "--model-budget")
    flat_tolerance: float = _rule("a batch improves on the best images/sec only by more than this fraction",
                                  "--flat-tolerance")
    flat_patience: int = _rule("end the sweep after this many batches in a row without such an improvement "
                               "(0: never)", "--flat-patience")
    step_cap_s: float = _rule("end the sweep once one step takes longer than this (0: no cap)", "--step-cap")
    latency_steps: int = _rule("batch-1 latency: timed steps, at least (0: no latency row)", "--latency-steps")
    latency_time_s: float = _rule("batch-1 latency: timed seconds, at least", "--latency-time")
    peak_rule: str = _rule("matmul peak for MFU: sustained (median over >= 1 s after >= 1 s warm-up) or burst "
                           "(fastest of a few)", "--peak-rule")
    scaling_sizes: tuple[int, ...] = _rule("the image sides of --img-size scaling (resolution scaling)")


GPU_BATCH_SIZES = tuple(2**k for k in range(5, 14))

PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        description="CPU default: short sweep, few steps, 10 s per model",
        precision="fp32", batch_sizes=(1, 2, 4, 8), warmup_steps=1, warmup_s=0.0, min_steps=5, min_time_s=0.0,
        max_time_s=0.0, model_budget_s=10.0, flat_tolerance=0.02, flat_patience=1, step_cap_s=0.0,
        latency_steps=5, latency_time_s=0.0, peak_rule="burst", scaling_sizes=(160, 224, 320)),
    "gpu": Preset(
        description="CUDA default: bf16, 32..8192 until flat or a 1 s step, 18 s per model",
        precision="bf16", batch_sizes=GPU_BATCH_SIZES, warmup_steps=5, warmup_s=0.3, min_steps=10, min_time_s=0.4,
        max_time_s=2.0, model_budget_s=18.0, flat_tolerance=0.03, flat_patience=2, step_cap_s=1.0,
        latency_steps=100, latency_time_s=0.5, peak_rule="sustained", scaling_sizes=(224, 448, 640, 1024)),
    "paper": Preset(
        description="the paper's full sweep 32..8192 in bf16, no early stop, no budget",
        precision="bf16", batch_sizes=GPU_BATCH_SIZES, warmup_steps=10, warmup_s=1.0, min_steps=50, min_time_s=1.0,
        max_time_s=0.0, model_budget_s=0.0, flat_tolerance=0.0, flat_patience=0, step_cap_s=0.0,
        latency_steps=200, latency_time_s=2.0, peak_rule="sustained", scaling_sizes=(224, 448, 640, 1024)),
}


def default_preset(device: torch.device) -> str:
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def preset_fields() -> list[dataclasses.Field]:
    """The preset fields that a command-line flag can override."""
    return [f for f in dataclasses.fields(Preset) if f.metadata.get("flag")]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if len(value) <= 4 else f"{value[0]},{value[1]},...,{value[-1]}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def preset_help(name: str) -> str:
    """`help text (cpu: X; gpu: Y; paper: Z)` for the flag of preset field `name`."""
    meta = {f.name: f for f in dataclasses.fields(Preset)}[name].metadata
    defaults = "; ".join(f"{preset}: {_show(getattr(values, name))}" for preset, values in PRESETS.items())
    return f"{meta['help']} (default by --preset: {defaults})".replace("%", "%%")


@dataclass(frozen=True)
class Settings:
    """Everything that changes a measurement; every field is written into every row."""

    device: torch.device
    preset: str = "cpu"
    bench: str = "infer"
    grad_checkpointing: bool = False
    precision: str = "fp32"
    precision_mode: str = "autocast"
    channels_last: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    cuda_graphs: bool = False
    img_size: int | None = None
    mixer_rule: str = "paper"
    batch_sizes: tuple[int, ...] = PRESETS["cpu"].batch_sizes
    warmup_steps: int = 1
    warmup_s: float = 0.0
    min_steps: int = 5
    min_time_s: float = 0.0
    max_time_s: float = 0.0
    model_budget_s: float = 0.0
    flat_tolerance: float = 0.02
    flat_patience: int = 0
    step_cap_s: float = 0.0
    latency_steps: int = 0
    latency_time_s: float = 0.0
    peak_rule: str = "burst"

    @classmethod
    def from_preset(cls, device: torch.device, preset: str, **overrides: Any) -> Settings:
        """The preset's rules for `device`, with `overrides` (None values are ignored)."""
        values = {f.name: getattr(PRESETS[preset], f.name) for f in preset_fields()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "batch_sizes" in values:
            values["batch_sizes"] = tuple(values["batch_sizes"])
        return cls(device=torch.device(device), preset=preset, **values)

    @property
    def mode(self) -> str:
        """'autocast' or 'pure' for bf16/fp16; 'none' for fp32/tf32 where there is nothing to choose."""
        return self.precision_mode if self.precision in LOW_PRECISION_DTYPES else "none"

    def timing_rules(self) -> TimingRules:
        return TimingRules(warmup_steps=self.warmup_steps, warmup_s=self.warmup_s, min_steps=self.min_steps,
                           min_time_s=self.min_time_s, max_time_s=self.max_time_s or None)

    @property
    def measures_latency(self) -> bool:
        """Inference runs get a batch-1 latency row per model; training runs do not."""
        return self.bench == "infer" and self.latency_steps > 0

    def latency_rules(self) -> TimingRules:
        return TimingRules(warmup_steps=max(self.warmup_steps, 1), warmup_s=self.warmup_s,
                           min_steps=max(self.latency_steps, 1), min_time_s=self.latency_time_s,
                           max_time_s=self.max_time_s or None)

    def budget(self) -> float | None:
        return self.model_budget_s or None

    def columns(self) -> dict[str, Any]:
        """The settings as row columns (the device goes in with the environment)."""
        return {
            "preset": self.preset, "grad_checkpointing": self.grad_checkpointing,
            "precision": self.precision, "precision_mode": self.mode,
            "channels_last_rule": self.channels_last, "compile": self.compile,
            "compile_backend": self.compile_backend if self.compile else "",
            "compile_mode": self.compile_mode if self.compile else "", "cuda_graphs": self.cuda_graphs,
            "warmup": self.warmup_steps, "warmup_min_s": self.warmup_s, "repeats": self.min_steps,
            "min_time_s": self.min_time_s, "max_time_s": self.max_time_s, "model_budget_s": self.model_budget_s,
            "flat_tolerance": self.flat_tolerance, "flat_patience": self.flat_patience,
            "stop_when_flat": self.flat_patience > 0, "step_cap_s": self.step_cap_s, "peak_rule": self.peak_rule,
        }

    def model_img_size(self, default: int) -> int:
        return int(self.img_size or default)
