"""Result rows: environment metadata, crash-safe appends, resume keys, loading as a DataFrame.

Every harness writes rows through this module so that every number in `results/*.csv` carries
what is needed to trust and repeat it (device, versions, commit, date), and so that an interrupted
run never leaves a half-written file behind: each write goes to a temporary file that atomically
replaces the old one.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from suite.cli import error_line

#: Columns every harness row carries (filled by :func:`environment`).
ENVIRONMENT_COLUMNS = (
    "device",
    "device_name",
    "cuda_version",
    "cudnn_version",
    "driver_version",
    "torch_version",
    "timm_version",
    "python_version",
    "cpu",
    "threads",
    "hostname",
    "suite_commit",
    "date",
)


#: The columns each results file must have (beside ENVIRONMENT_COLUMNS); the report relies on them.
#: Harnesses may write more columns; they must not rename these.
SCHEMAS: dict[str, tuple[str, ...]] = {
    "flops": (
        "model", "group", "family", "timm_name", "img_size", "mixer_rule", "num_classes",
        "params", "params_no_head", "params_stem", "params_blocks", "params_head", "params_other",
        "macs", "gmacs",
    ),
    "throughput": (
        "model", "group", "family", "timm_name", "img_size", "batch_size", "precision", "channels_last",
        "compile", "status", "step_time_median_ms", "step_time_p10_ms", "step_time_p90_ms",
        "images_per_sec", "peak_memory_mb", "macs_per_image", "achieved_tflops", "peak_tflops", "mfu",
    ),
    "fewshot": (
        "model", "family", "weights", "dataset", "img_size", "shots", "seed", "l2", "l2_rule",
        "accuracy", "n_train", "n_test", "feature_dim",
    ),
}


#: The manifest of `python -m suite.inspect`, in its --out folder (results/inspect/ by default): one row per
#: model, weights and picture, the columns below among others. Rows are appended; when read, the last row of a
#: (model, weights, kind, block) supersedes the earlier ones.
INSPECT_MANIFEST = "inspect.csv"
INSPECT_COLUMNS = ("model", "family", "weights", "weights_sha256", "kind", "block", "tile", "file", "locality",
                   "locality_uniform")
INSPECT_KEY = ("model", "weights", "kind", "block")


#: What a throughput row's `status` may say (suite.sweep and suite.jobs write them; the report reads them):
#: measured; out of memory; cuDNN cannot run it; a launch configuration CUDA refuses; compiled code that
#: fell back to eager or recompiled while timed; another exception; the child process died.
THROUGHPUT_STATUSES = ("ok", "oom", "unsupported", "invalid_config", "compile_fallback", "compile_recompiled",
                       "error", "crashed")


class ResultsError(ValueError):
    """A results file that cannot be read or written; the message names the file (and row)."""


@functools.lru_cache(maxsize=1)
def suite_commit() -> str:
    """The git commit of the suite's checkout, with '-dirty' when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=here, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=4)
def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def environment(device: Any = "cpu") -> dict[str, Any]:
    """What a reader needs to repeat a measurement made on `device` (a torch.device or string)."""
    import timm
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        device_name = torch.cuda.get_device_name(index)
        cudnn = torch.backends.cudnn.version()
    else:
        device_name = cpu_name()
        cudnn = None
    return {
        "device": str(dev),
        "device_name": device_name,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": str(cudnn) if cudnn else "",
        "driver_version": _driver_version() if dev.type == "cuda" else "",
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python_version": platform.python_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "suite_commit": suite_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def read_results(path: str | os.PathLike, required: Sequence[str] = (), as_text: bool = False) -> pd.DataFrame:
    """Load a results CSV; refuse a malformed one with a message naming the file and the row.

    `as_text` keeps every cell as the text in the file (blanks as ''), for rewriting rows unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such results file")
    if path.is_dir():
        raise ResultsError(f"{path}: is a folder, not a results file")
    try:
        frame = pd.read_csv(path, keep_default_na=not as_text, dtype=str if as_text else None)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(required))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable CSV ({error_line(exc)})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
                replace_keys: Sequence[str] | None = None) -> Path:
    """Append rows to a CSV, creating it (and its folder) if needed; the write is atomic.

    New columns are added to the file (old rows get blanks), so a newer suite can append to an older
    file. With `replace_keys`, old rows whose key equals a new row's key are dropped first (for
    deterministic results such as counts, where a re-run supersedes). Old rows are rewritten as the text
    they were (an integer column with blanks does not turn into floats). The whole file is rewritten
    into a temporary file beside it and renamed over the old one, so a run killed at any moment
    leaves either the old or the new file, never a torn one.
    """
    path = Path(path)
    new = pd.DataFrame([dict(r) for r in rows])
    if new.empty:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot create folder ({exc.strerror})") from None
    if path.exists() and path.stat().st_size > 0:
        old = read_results(path, as_text=True)
        if replace_keys and all(c in old.columns for c in replace_keys):
            new_keys = {row_key(r, replace_keys) for r in new.to_dict("records")}
            stale = [row_key(r, replace_keys) in new_keys for r in old.to_dict("records")]
            old = old.loc[[not s for s in stale]]
        columns = list(old.columns) + [c for c in new.columns if c not in old.columns]
        frame = pd.concat([old, new], ignore_index=True)[columns]
    else:
        frame = new
    write_atomic(path, frame.to_csv(index=False))
    return path


def ensure_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any measurement, if results cannot be written to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ResultsError(f"{path}: is a folder, not a results file")
    if path.exists() and not os.access(path, os.R_OK):
        raise ResultsError(f"{path}: cannot read it to append to it")
    return path


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write `content` (text as UTF-8, or bytes) to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The mode a rewritten file keeps: the old file's, else what `open()` would give (0666 & ~umask).

    mkstemp creates 0600 files; results are meant to be shared, so the usual mode is restored.
    """
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def done_rows(path: str | os.PathLike, key_columns: Sequence[str],
              statuses: Sequence[str] | None = None) -> dict[tuple[str, ...], dict[str, Any]]:
    """The rows already in a results file, by key, for `--resume`; only rows whose `status` is in
    `statuses` when given. A missing or empty file, or one without those columns, has none."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}
    frame = read_results(path)
    needed = (*key_columns, "status") if statuses is not None else tuple(key_columns)
    if any(c not in frame.columns for c in needed):
        return {}
    return {row_key(row, key_columns): row for row in frame.to_dict("records")
            if statuses is None or row.get("status") in statuses}


def row_key(row: Mapping[str, Any], key_columns: Sequence[str]) -> tuple[str, ...]:
    """The key of one row in the same string form :func:`done_rows` uses."""
    return tuple(_key_str(row.get(c)) for c in key_columns)


def _key_str(value: Any) -> str:
    """Normalise a value so that 224, 224.0 and '224' compare equal and NaN equals ''."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bool):
        return str(value)
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and text.strip().lstrip("-").replace(".", "", 1).isdigit():
        return str(int(number))
    return text
