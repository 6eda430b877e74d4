"""Result rows: environment metadata, crash-safe appends, resume keys, loading as a DataFrame.

Every harness writes rows through this module so that every number in `results/*.csv` carries
what is needed to trust and repeat it (device, versions, commit, date), and so that no number of
writers, and no writer killed at any moment, can lose a row: appends go to the end of the file
under a file lock, an unfinished last line is dropped by readers and mended by the next append,
and where locks cannot be trusted each job writes a part file that readers take with the main one.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import io
import math
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


#: The full header of each harness's file, in order: the schema columns, what else each harness
#: writes, and the environment. Appends refuse a file whose header differs (see append_rows).
COLUMNS: dict[str, tuple[str, ...]] = {
    "flops": (
        "model", "group", "family", "timm_name", "build", "img_size", "mixer_rule", "token_dim", "num_classes",
        "params", "params_no_head", "params_stem", "params_blocks", "params_head", "params_other", "macs", "gmacs",
        "gflops", "macs_fvcore_plain", "fvcore_plain_rel_diff", "macs_flop_counter", "flop_counter_rel_diff",
        "macs_closed_form", "uncounted_ops", "macs_by_op", "count_seconds", "note",
        *ENVIRONMENT_COLUMNS,
    ),
    "throughput": (
        "bench", "model", "group", "family", "timm_name", "build_source", "img_size", "batch_size", "preset",
        "grad_checkpointing",
        "precision", "precision_mode", "channels_last_rule", "compile", "compile_backend", "compile_mode",
        "cuda_graphs", "warmup", "warmup_min_s", "repeats", "min_time_s", "max_time_s", "model_budget_s",
        "flat_tolerance", "flat_patience", "stop_when_flat", "step_cap_s", "peak_rule", "tf32", "channels_last",
        "channels_last_reason", "cudnn_benchmark", "mixer_rule", "status", "error", "sweep_stop",
        *ENVIRONMENT_COLUMNS,
        "clock", "timed_steps", "warmup_steps", "warmup_s", "first_step_ms", "step_time_median_ms",
        "step_time_p10_ms", "step_time_p90_ms", "step_time_p99_ms", "step_time_iqr_ms", "step_time_mean_ms",
        "iqr_rel", "noise", "images_per_sec", "peak_memory_mb", "peak_reserved_mb", "process_max_rss_mb",
        "macs_per_image", "model_flops_per_image", "achieved_tflops", "peak_tflops", "peak_method",
        "peak_sm_clock_mhz", "peak_temperature_c",
        "peak_power_w", "mfu", "datasheet_tflops", "datasheet_source", "mfu_datasheet", "telemetry", "sm_clock_mhz",
        "sm_clock_min_mhz", "temperature_c", "power_w", "energy_j", "energy_j_per_image", "params", "latency_p50_ms",
        "latency_p90_ms", "latency_p99_ms", "compile_s", "compile_frames", "compile_graphs", "compile_graph_breaks",
        "compile_status", "build_s", "build_method", "train_recipe", "skipped_optimizer_steps", "train_samples_per_sec", "train_step_time",
        "train_batch_size", "train_img_size",
        "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
        "infer_img_size", "infer_gmacs", "param_count",
    ),
    "inspect": (
        "model", "family", "group", "timm_name", "weights", "weights_sha256", "arrays", "kind", "block", "layer",
        "units", "tile", "file", "scale", "locality", "locality_uniform", "opposite_pairs",
        *ENVIRONMENT_COLUMNS,
    ),
    "fewshot": (
        "model", "family", "group", "timm_name", "weights", "weights_sha256", "img_size", "batch_size",
        "feature_precision", "feature_tf32", "world_size", "dataset", "shots", "seed", "n_train", "n_test",
        "n_classes", "feature_dim", "probe_form", "probe_dtype", "std_epsilon", "bias_value", "unreadable_train", "unreadable_test",
        "train_split", "test_split", "l2", "l2_rule", "accuracy", "heldout_accuracy", "n_heldout", "l2_grid",
        *ENVIRONMENT_COLUMNS,
    ),
}


#: The manifest of `python -m suite.inspect`, in its --out folder (results/inspect/ by default): one row per
#: model, weights and picture. When read, the last row of a (model, weights, kind, block) supersedes the others.
INSPECT_MANIFEST = "inspect.csv"
INSPECT_COLUMNS = ("model", "family", "weights", "weights_sha256", "kind", "block", "tile", "file", "locality",
                   "locality_uniform")
INSPECT_KEY = ("model", "weights", "kind", "block")


#: What a throughput row's `status` may say (suite.sweep and suite.jobs write them; the report reads them):
#: measured; out of memory; cuDNN cannot run it; a launch configuration CUDA refuses; compiled code that
#: fell back to eager or recompiled while timed; another exception; the child process died.
THROUGHPUT_STATUSES = ("ok", "oom", "unsupported", "invalid_config", "compile_fallback", "compile_recompiled",
                       "error", "crashed")


#: results file kind -> the command that produces it.
COMMANDS = {
    "flops": "python -m suite.flops --models all",
    "throughput": "python -m suite.throughput --models all",
    "fewshot": "python -m suite.fewshot --shots 5",
}


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


def device_name(device: Any) -> str:
    """What rows call a device: the CUDA device's name (torch.cuda.get_device_name), or the CPU's model."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device.index if device.index is not None else torch.cuda.current_device())
    return cpu_name()


def environment(device: Any = "cpu") -> dict[str, Any]:
    """What a reader needs to repeat a measurement made on `device` (a torch.device or string)."""
    import timm
    import torch

    dev = torch.device(device)
    cudnn = torch.backends.cudnn.version() if dev.type == "cuda" else None
    return {
        "device": str(dev),
        "device_name": device_name(dev),
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


class ResultsWarning(UserWarning):
    """A results file was readable, but not all of it: an interrupted writer's unfinished last line."""


#: Rows whose key repeats in a file supersede the earlier ones when read (deterministic results:
#: a count made again replaces the old count); other harnesses keep every row.
SUPERSEDE_KEYS: dict[str, tuple[str, ...]] = {"flops": ("model", "img_size", "mixer_rule", "num_classes"),
                                               "inspect": INSPECT_KEY}

_LOCK_TIMEOUT_S = 600.0


def _complete_text(path: Path) -> tuple[str, bool]:
    """The file's text up to its last newline, and whether an unfinished line followed it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not a readable CSV ({error_line(exc)})") from None
    if not text or text.endswith("\n"):
        return text, False
    return text[: text.rfind("\n") + 1], True


def read_results(path: str | os.PathLike, required: Sequence[str] = ()) -> pd.DataFrame:
    """Load one results CSV; refuse a malformed one with a message naming the file and the row.

    A writer killed mid-append leaves at most an unfinished last line: it is dropped, with a
    ResultsWarning naming the file, and the next append mends the file.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such results file")
    if path.is_dir():
        raise ResultsError(f"{path}: is a folder, not a results file")
    text, torn = _complete_text(path)
    if torn:
        warnings.warn(f"{path}: dropped an unfinished last line (a writer was interrupted; the next append "
                      f"mends the file)", ResultsWarning, stacklevel=2)
    try:
        frame = pd.read_csv(io.StringIO(text), keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(required))
    except pd.errors.ParserError as exc:
        raise ResultsError(f"{path}: not a readable CSV ({error_line(exc)})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def part_path(path: str | os.PathLike, tag: str) -> Path:
    """The part file a job writes beside a results file: `throughput.csv` -> `throughput.part-TAG.csv`.

    Where file locks cannot be trusted (NFS shared by several nodes) each job writes its own part,
    and every reader takes the results file and its parts as one table.
    """
    path = Path(path)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)
    return path.with_name(f"{path.stem}.part-{safe}{path.suffix}")


def part_files(path: str | os.PathLike) -> list[Path]:
    """The part files beside a results file, in name order."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.part-*{path.suffix}"))


def read_table(path: str | os.PathLike, required: Sequence[str] = (), kind: str | None = None) -> pd.DataFrame:
    """A results file and its part files as one table: rows in file order, exact duplicates dropped
    (a part already merged), and for `kind`s with SUPERSEDE_KEYS the last row of each key kept."""
    path = Path(path)
    sources = ([path] if path.exists() else []) + part_files(path)
    if not sources:
        raise ResultsError(f"{path}: no such results file")
    frames = [read_results(source, required) for source in sources]
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame(columns=list(required))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.drop_duplicates(ignore_index=True)
    keys = SUPERSEDE_KEYS.get(kind or "")
    if keys and all(k in frame.columns for k in keys):
        frame = frame.drop_duplicates(subset=list(keys), keep="last", ignore_index=True)
    return frame


def _cell(value: Any) -> str:
    """One CSV cell: blanks for None and NaN, and never a line break (a row is one line)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).splitlines())


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], kind: str) -> Path:
    """Append rows of harness `kind` to the end of a results file, under a file lock.

    Nothing already there is rewritten: the rows go to the end in one write, so any number of
    writers keep every row, and a writer killed at any moment leaves at most an unfinished last
    line, which readers drop and this function cuts before it appends (it "mends" the file). The
    file's header must be the suite's schema for `kind` (:data:`COLUMNS`); a file with another
    header (someone else's CSV, or one written by an older suite) is refused, never merged into.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    columns = COLUMNS[kind]
    records = [dict(r) for r in rows]
    if not records:
        return path
    unknown = sorted({c for r in records for c in r} - set(columns))
    if unknown:
        raise ValueError(f"{kind} rows with columns the schema does not have: {', '.join(unknown)}")
    body = _csv_text([[_cell(r.get(c)) for c in columns] for r in records])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path.with_name(path.name + ".lock")), timeout=_LOCK_TIMEOUT_S)
        with lock:
            text = _csv_text([list(columns)]) + body if _ready_for(path, kind, columns) else body
            _append(path, text.encode("utf-8"))
    except Timeout:
        raise ResultsError(f"{path}: locked by another writer for {_LOCK_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _ready_for(path: Path, kind: str, columns: Sequence[str]) -> bool:
    """Check (under the lock) that `path` is a file of harness `kind` and mend it; True if it needs
    its header written. An unfinished last line (a writer killed mid-append) is cut; a file whose
    only line is unfinished is our own torn header when it is the start of it, else someone else's."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    header_text = _csv_text([list(columns)])
    with open(path, "rb+") as handle:
        data = handle.read()
        if b"\n" not in data:
            if header_text.encode("utf-8").startswith(data):
                handle.truncate(0)
                return True
            raise ResultsError(f"{path}: not a results file of this suite (no complete line); append to another --out")
        header = next(csv.reader([data[: data.index(b"\n")].decode("utf-8", errors="replace")]), [])
        if header != list(columns):
            raise ResultsError(
                f"{path}: its header is not the suite's {kind} schema ({_header_difference(header, columns)}); "
                f"append to another --out, or convert it with python -m suite.merge {path}")
        if not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
    return False


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _header_difference(header: Sequence[str], columns: Sequence[str]) -> str:
    extra = [c for c in header if c not in columns]
    missing = [c for c in columns if c not in header]
    if not extra and not missing:
        return "same columns in another order"
    parts = []
    if extra:
        parts.append(f"{len(extra)} column(s) it should not have, e.g. {extra[0]}")
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    return "; ".join(parts)


def rewrite_as_schema(path: str | os.PathLike, kind: str) -> int:
    """Rewrite a results file (and fold its parts into it) with the suite's header for `kind`, under
    the lock; refuse a file with columns the schema does not know. Returns the number of rows."""
    from filelock import FileLock

    path = Path(path)
    columns = COLUMNS[kind]
    lock = FileLock(str(path.with_name(path.name + ".lock")), timeout=_LOCK_TIMEOUT_S)
    with lock:
        parts = part_files(path)
        frame = read_table(path)
        unknown = [c for c in frame.columns if c not in columns]
        if unknown:
            raise ResultsError(f"{path}: has column(s) the {kind} schema does not know ({', '.join(unknown[:3])}); "
                               f"it is not a file of this harness")
        frame = frame.reindex(columns=list(columns))
        write_atomic(path, _csv_text([list(columns)] + [[_cell(v) for v in row]
                                                       for row in frame.itertuples(index=False)]))
        for part in parts:
            part.unlink()
    return len(frame)


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
    """The rows already in a results file and its parts, by key, for `--resume`; only rows whose
    `status` is in `statuses` when given. A missing or empty file, or one without those columns, has none."""
    path = Path(path)
    if not ((path.exists() and path.stat().st_size > 0) or part_files(path)):
        return {}
    frame = read_table(path)
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


# --------------------------------------------------------------------------------------------------
# Loading and validating whole results folders (the report's input)
# --------------------------------------------------------------------------------------------------

#: Numeric columns checked in each file: (column, must it be filled in).
#: For throughput, images_per_sec must be filled in on rows whose status is ok.
NUMERIC_COLUMNS: dict[str, tuple[tuple[str, bool], ...]] = {
    "flops": (("img_size", True), ("num_classes", False), ("params", True), ("params_no_head", True),
              ("params_stem", False), ("params_blocks", False), ("params_head", False),
              ("params_other", False), ("macs", True), ("gmacs", True)),
    "throughput": (("img_size", True), ("batch_size", True), ("step_time_median_ms", False),
                   ("step_time_p10_ms", False), ("step_time_p90_ms", False), ("images_per_sec", False),
                   ("peak_memory_mb", False), ("macs_per_image", False), ("achieved_tflops", False),
                   ("peak_tflops", False), ("mfu", False)),
    "fewshot": (("img_size", False), ("shots", True), ("seed", True), ("l2", False), ("accuracy", True),
                ("n_train", False), ("n_test", False), ("feature_dim", False)),
}


def _where(path: Path, frame: pd.DataFrame, index: Any) -> str:
    line = int(frame.index.get_loc(index)) + 2  # line 1 is the header
    model = frame.at[index, "model"]
    named = f" (model {model!r})" if isinstance(model, str) and model else ""
    return f"{path}: line {line}{named}"


def _show(value: Any) -> str:
    """A value as a reader wrote it: 1.5 rather than np.float64(1.5)."""
    return f"{float(value):g}" if isinstance(value, (int, float, np.number)) else repr(value)


def validate(kind: str, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check the values, not just the columns; return the frame with numeric columns as numbers.

    Raises ResultsError naming the file, the line and the model of the first bad value.
    """
    frame = frame.reset_index(drop=True).copy()
    blank_model = frame["model"].isna() | (frame["model"].astype(str).str.strip() == "")
    if blank_model.any():
        raise ResultsError(f"{_where(path, frame, blank_model.idxmax())}: the model column is empty")
    frame["model"] = frame["model"].astype(str)
    if "family" in frame:
        frame["family"] = frame["family"].fillna("").astype(str)
    for column, required in NUMERIC_COLUMNS[kind]:
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & numbers.isna()
        if bad.any():
            index = bad.idxmax()
            raise ResultsError(f"{_where(path, frame, index)}: {column} {raw[index]!r} is not a number")
        infinite = np.isinf(numbers.astype(float))
        if infinite.any():
            raise ResultsError(f"{_where(path, frame, infinite.idxmax())}: {column} is infinite")
        if required and numbers.isna().any():
            raise ResultsError(f"{_where(path, frame, numbers.isna().idxmax())}: {column} is empty")
        frame[column] = numbers
    if kind == "throughput":
        status = frame["status"].fillna("").astype(str).str.strip().str.lower()
        unknown = ~status.isin(THROUGHPUT_STATUSES)
        if unknown.any():
            index = unknown.idxmax()
            raise ResultsError(f"{_where(path, frame, index)}: status {frame.at[index, 'status']!r} "
                               f"is not one of {', '.join(THROUGHPUT_STATUSES)}")
        frame["status"] = status
        ok = status == "ok"
        missing = ok & frame["images_per_sec"].isna()
        if missing.any():
            raise ResultsError(f"{_where(path, frame, missing.idxmax())}: images_per_sec is empty on an ok row")
        not_positive = ok & (frame["images_per_sec"] <= 0)
        if not_positive.any():
            index = not_positive.idxmax()
            raise ResultsError(f"{_where(path, frame, index)}: images_per_sec {_show(frame.at[index, 'images_per_sec'])} "
                               "is not positive")
        for column in ("device_name", "precision"):
            frame[column] = frame[column].fillna("unknown").astype(str)
    if kind == "fewshot":
        outside = (frame["accuracy"] < 0) | (frame["accuracy"] > 1)
        if outside.any():
            index = outside.idxmax()
            raise ResultsError(f"{_where(path, frame, index)}: accuracy {_show(frame.at[index, 'accuracy'])} "
                               "is outside [0, 1]")
        for column in ("weights", "dataset", "l2_rule"):
            frame[column] = frame[column].fillna("").astype(str)
    for column in ("batch_size", "shots", "img_size"):
        if column in frame and (frame[column] <= 0).any():
            index = (frame[column] <= 0).idxmax()
            raise ResultsError(f"{_where(path, frame, index)}: {column} {_show(frame.at[index, column])} is not positive")
    return frame


def load_results(results_dir: Path) -> dict[str, pd.DataFrame | None]:
    """Each results file that exists, validated; None for those that do not (or have no rows)."""
    loaded: dict[str, pd.DataFrame | None] = {}
    for kind, columns in SCHEMAS.items():
        path = results_dir / f"{kind}.csv"
        if not path.exists() and not part_files(path):
            loaded[kind] = None
            continue
        frame = read_table(path, required=tuple(columns) + ENVIRONMENT_COLUMNS, kind=kind)
        loaded[kind] = validate(kind, frame, path) if len(frame) else None
    return loaded

