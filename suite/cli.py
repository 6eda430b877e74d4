"""What every command line of the suite shares: one-line errors with exit code 2, common flags."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

#: Exit code for bad input, the convention of argparse and of Unix tools.
EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad input from the user: reported as one line and exit code 2, never a traceback."""


def error_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (which may be empty)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def fail(prog: str, message: str) -> NoReturn:
    """Print `prog: error: message` on one line to stderr and exit with code 2."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (plus a pointer to --help) instead of the usage dump."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's hook
        fail(self.prog, f"{message} (see --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (where there is one to show) and keep the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def _int_list(text: str, accept: Callable[[int], bool], expected: str) -> list[int]:
    """Parse '1,2,4'; an ArgumentTypeError naming what was `expected` if any value fails or is refused."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not values or not all(accept(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return values


def positive_int_list(text: str) -> list[int]:
    """Parse '1,2,4' into [1, 2, 4]; every value must be a positive integer."""
    return _int_list(text, lambda v: v > 0, "comma-separated positive integers")


def non_negative_int_list(text: str) -> list[int]:
    """Parse '0,1,2' into [0, 1, 2]; every value must be an integer >= 0 (seeds, for example)."""
    return _int_list(text, lambda v: v >= 0, "comma-separated non-negative integers")


def _number(text: str, convert: Callable[[str], float], accept: Callable[[float], bool], expected: str) -> Any:
    """Parse `text` with `convert`; an ArgumentTypeError naming what was `expected` if it fails or is refused."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse a positive integer."""
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    """Parse an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """Parse a finite number > 0."""
    return _number(text, float, lambda v: 0 < v < math.inf, "a positive number")


def non_negative_float(text: str) -> float:
    """Parse a finite number >= 0."""
    return _number(text, float, lambda v: 0 <= v < math.inf, "a number >= 0")


def resolve_device(text: str) -> "torch.device":
    """`auto` (CUDA if torch sees a GPU, else the CPU), `cpu`, `cuda` or `cuda:N`; UsageError otherwise."""
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {text!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text} asked for, but torch sees no CUDA device; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"no CUDA device {device.index}; this machine has {torch.cuda.device_count()}")
    return device


def resolve_devices(text: str) -> list["torch.device"]:
    """`all` (every CUDA device torch sees), or a comma-separated list such as `cuda:0,cuda:2` or
    `cpu,cpu`; UsageError for an unknown device, one that is not there, or a GPU named twice."""
    import torch

    if text.strip() == "all":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UsageError("--devices all: torch sees no CUDA device; use --devices cpu (or cpu,cpu)")
        return [torch.device("cuda", i) for i in range(count)]
    devices = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry or entry == "auto":
            raise UsageError(f"--devices {text!r}: give devices such as cuda:0,cuda:1 or cpu,cpu (or all)")
        device = resolve_device(entry)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.type == "cuda" and device in devices:
            raise UsageError(f"--devices names {device} twice: two models would share one GPU")
        devices.append(device)
    return devices


def output_file(text: str | Path, default_name: str) -> Path:
    """`--out`, the same way in every command that writes one file: a path with the file's suffix
    (`.csv`, `.html`) is that file; anything else is a folder, which gets `default_name`."""
    path = Path(text)
    return path if path.suffix.lower() == Path(default_name).suffix.lower() else path / default_name


def out_help(default_name: str, what: str) -> str:
    """The --out help text of a one-file command, stating the shared convention."""
    return (f"the {what} to write: a path ending in {Path(default_name).suffix} is the file, anything else a folder "
            f"(then FOLDER/{default_name})")


def add_models_argument(parser: argparse.ArgumentParser, default: str = "all") -> None:
    """The `--models` flag, with the same grammar in every harness."""
    parser.add_argument(
        "--models",
        default=default,
        help="comma-separated: 'all', a group (mixer, vit, bit, hybrid, context), a family "
        "(mlp, attention, conv), paper names ('Mixer-B/16'), globs ('ViT-*/16') or timm model names",
    )
