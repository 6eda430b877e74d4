"""`python -m suite.gpucheck`: the suite's GPU check, one command that ends within 8 minutes on an H100/H200.

It runs, each as its own process with its own time limit and log (OUT/logs/), inside one overall
deadline (a step that would not fit is skipped and says so):

  tests     the CUDA tests (pytest -m gpu)
  sweep     the default GPU sweep (bf16 autocast) of Mixer-B/16, ViT-B/16, BiT-R50x1, ResNet-50 and
            R50+ViT-B/16, with batch-1 latency and NVML clocks, power and energy
  effnet    EfficientNet-L2 at its native 800 px up to out-of-memory or the step cap
  compile   torch.compile (inductor) of ViT-B/16 and ResNet-50 at batch 256
  graphs    CUDA graphs of ViT-B/16 and ResNet-50 at batch 64 and 256
  train     a bf16 training sweep (--bench train) of Mixer-B/16, ViT-B/16 and ResNet-50
  timm      timm's own benchmark.py (pass its path: --timm-benchmark; it is not shipped with the
            suite) against ours on the same GPU, model, batch and precision, alternating, and ours/timm

Every result row goes to OUT/throughput.csv with the suite's metadata; the comparison to
OUT/timm-comparison-infer.csv (or -train). With only the torch and timm a machine already has, run it from the
suite's folder: `PYTHONPATH=. python -m suite.gpucheck --timm-benchmark /path/to/benchmark.py`.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from suite.cli import ArgumentParser, HelpFormatter, fail, positive_float, positive_int

PROG = "python -m suite.gpucheck"
SWEEP_MODELS = "Mixer-B/16,ViT-B/16,BiT-R50x1,ResNet-50,R50+ViT-B/16"
TWO_MODELS = "ViT-B/16,ResNet-50"
#: timm names of the models compared with timm's benchmark.py, and the batch size.
TIMM_MODELS = ("vit_base_patch16_224", "resnet50", "mixer_b16_224")
TIMM_BATCH = 256
STEP_NAMES = ("tests", "sweep", "effnet", "compile", "graphs", "train", "timm")


@dataclass
class Step:
    """One command of the check, with the most seconds it may take."""

    name: str
    command: list[str]
    limit_s: float
    log: Path
    status: str = "pending"
    seconds: float = 0.0

    def text(self) -> str:
        return " ".join(shlex.quote(part) for part in self.command)


@dataclass
class Check:
    steps: list[Step] = field(default_factory=list)
    comparison: pd.DataFrame | None = None


def throughput(out: Path, device: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "suite.throughput", "--device", device, "--out", str(out / "throughput.csv"),
            "--no-progress", *args]


def ours_for_timm(out: Path, device: str, model: str, batch: int, precision: str, bench: str = "infer") -> list[str]:
    return [sys.executable, "-m", "suite.throughput", "--device", device, "--out", str(out / f"vs-timm-{bench}.csv"),
            "--no-progress", "--models", model, "--batch-sizes", str(batch), "--img-size", "224",
            "--precision", precision, "--bench", bench, *(["--latency-steps", "0"] if bench == "infer" else []),
            "--flat-patience", "0", "--model-budget", "0", "--warmup", "10", "--repeats", "50",
            "--channels-last", "off"]


def timm_command(benchmark: Path, out: Path, device: str, model: str, batch: int, precision: str,
                 round_: int, bench: str = "infer") -> list[str]:
    """timm's benchmark.py at the same model, batch, image size and precision (bf16 = AMP in bf16, as ours);
    training with AdamW, as ours."""
    flags = ["--amp", "--amp-dtype", "bfloat16"] if precision == "bf16" else ["--precision", "float32"]
    kind = ["--bench", "inference"] if bench == "infer" else ["--bench", "train", "--opt", "adamw"]
    return [sys.executable, str(benchmark), "--model", model, *kind, "--device", device,
            "-b", str(batch), "--img-size", "224", *flags, "--num-warm-iter", "10", "--num-bench-iter", "50",
            "--no-retry", "--results-file", str(out / "timm" / f"{model}-{round_}.csv")]


def build_steps(out: Path, device: str, benchmark: Path | None, only: tuple[str, ...], timm_models: tuple[str, ...],
                timm_batch: int, precision: str, rounds: int, bench: str = "infer") -> list[Step]:
    """The check's commands in order (only those in `only`)."""
    logs = out / "logs"
    steps = [
        Step("tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], 60, logs / "tests.log"),
        Step("sweep", throughput(out, device, "--models", SWEEP_MODELS), 120, logs / "sweep.log"),
        Step("effnet", throughput(out, device, "--models", "EfficientNet-L2", "--model-budget", "0",
                                  "--flat-patience", "0", "--latency-steps", "0"), 45, logs / "effnet.log"),
        Step("compile", throughput(out, device, "--models", TWO_MODELS, "--compile", "--batch-sizes", "256",
                                   "--latency-steps", "0"), 120, logs / "compile.log"),
        Step("graphs", throughput(out, device, "--models", TWO_MODELS, "--cuda-graphs", "--batch-sizes", "64,256",
                                  "--latency-steps", "0"), 45, logs / "graphs.log"),
        Step("train", throughput(out, device, "--models", "Mixer-B/16,ViT-B/16,ResNet-50", "--bench", "train"), 90,
             logs / "train.log"),
    ]
    if benchmark is not None:
        for round_ in range(rounds):
            for model in timm_models:
                pair = [Step("timm", timm_command(benchmark, out, device, model, timm_batch, precision, round_, bench),
                             60, logs / f"timm-{model}-{round_}.log"),
                        Step("timm", ours_for_timm(out, device, model, timm_batch, precision, bench), 60,
                             logs / f"ours-{model}-{round_}.log")]
                steps.extend(pair if round_ % 2 == 0 else pair[::-1])  # who goes first alternates
    return [step for step in steps if step.name in only]


def run_steps(steps: list[Step], deadline_s: float, echo: bool = True, least_s: float = 20.0) -> None:
    """Run each step within its limit and what is left of the deadline; skip a step when less than
    `least_s` (or its own limit, if smaller) is left."""
    started = time.monotonic()
    for step in steps:
        left = deadline_s - (time.monotonic() - started)
        if left < min(step.limit_s, least_s):
            step.status = "skipped (deadline)"
            continue
        step.log.parent.mkdir(parents=True, exist_ok=True)
        if echo:
            print(f"[{time.monotonic() - started:5.0f} s] {step.name}: {step.text()}", flush=True)
        begun = time.monotonic()
        with open(step.log, "w") as log:
            try:
                code = subprocess.run(step.command, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=min(step.limit_s, left)).returncode
                step.status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                step.status = f"timed out after {min(step.limit_s, left):.0f} s"
        step.seconds = time.monotonic() - begun


def compare_with_timm(out: Path, timm_models: tuple[str, ...], bench: str = "infer") -> pd.DataFrame:
    """Ours against timm's benchmark.py per model: images/sec of each round, medians and their ratio."""
    ours_path = out / f"vs-timm-{bench}.csv"
    ours = pd.read_csv(ours_path) if ours_path.exists() else pd.DataFrame(columns=["timm_name", "images_per_sec"])
    rows = []
    for model in timm_models:
        theirs = []
        for path in sorted((out / "timm").glob(f"{model}-*.csv")):
            frame = pd.read_csv(path)
            for column in ("infer_samples_per_sec", "train_samples_per_sec"):
                if column in frame.columns and len(frame):
                    theirs.append(float(frame[column].iloc[0]))
        mine = ours[(ours["timm_name"] == model) & (ours.get("status", "ok") == "ok")]["images_per_sec"].astype(float)
        if not theirs or mine.empty:
            continue
        ours_median, timm_median = float(mine.median()), float(pd.Series(theirs).median())
        rows.append({"model": model, "rounds": min(len(theirs), len(mine)), "ours_img_s": ours_median,
                     "timm_img_s": timm_median, "ours_over_timm": ours_median / timm_median,
                     "ours_each": " ".join(f"{v:.1f}" for v in mine), "timm_each": " ".join(f"{v:.1f}" for v in theirs)})
    return pd.DataFrame(rows)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, formatter_class=HelpFormatter,
                            description=__doc__.split("\n", 1)[1].strip())
    parser.add_argument("--out", default="results/gpu-check", help="folder for the rows, the comparison and the logs")
    parser.add_argument("--device", default="cuda", help="the GPU to check (cuda or cuda:N)")
    parser.add_argument("--timm-benchmark", type=Path, default=None,
                        help="path of timm's benchmark.py (github.com/huggingface/pytorch-image-models); "
                             "without it the comparison step is left out")
    parser.add_argument("--only", default=",".join(STEP_NAMES), help=f"steps to run, of {','.join(STEP_NAMES)}")
    parser.add_argument("--deadline", type=positive_float, default=480.0, help="seconds for the whole check")
    parser.add_argument("--timm-models", default=",".join(TIMM_MODELS), help="models compared with timm")
    parser.add_argument("--timm-batch", type=positive_int, default=TIMM_BATCH, help="batch of the comparison")
    parser.add_argument("--timm-precision", choices=("bf16", "fp32"), default="bf16", help="precision of the comparison")
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds of the comparison")
    parser.add_argument("--timm-bench", choices=("infer", "train"), default="infer",
                        help="compare inference, or training steps (AdamW on both sides)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in STEP_NAMES]
    if unknown:
        fail(PROG, f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}")
    if args.timm_benchmark is not None and not args.timm_benchmark.is_file():
        fail(PROG, f"--timm-benchmark {args.timm_benchmark}: no such file (fetch benchmark.py from timm's repository)")
    out = Path(args.out)
    timm_models = tuple(m.strip() for m in args.timm_models.split(",") if m.strip())
    steps = build_steps(out, args.device, args.timm_benchmark, only, timm_models, args.timm_batch,
                        args.timm_precision, args.rounds, args.timm_bench)
    (out / "timm").mkdir(parents=True, exist_ok=True)
    run_steps(steps, args.deadline)
    print("\nstep      status                seconds  log")
    for step in steps:
        print(f"{step.name:<9} {step.status:<21} {step.seconds:7.1f}  {step.log}")
    if "timm" in only and args.timm_benchmark is not None:
        comparison = compare_with_timm(out, timm_models, args.timm_bench)
        if len(comparison):
            comparison.to_csv(out / f"timm-comparison-{args.timm_bench}.csv", index=False)
            print("\nours against timm's benchmark.py (median images/sec over the rounds):")
            print(comparison.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    elif "timm" in only:
        print("\ntimm comparison left out: pass --timm-benchmark PATH (timm's benchmark.py)")
    failed = [s for s in steps if s.status != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
