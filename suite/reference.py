"""timm's published throughput, as a reference beside a user's own (package data in suite/reference/timm/).

timm measures its models with its own benchmark.py on named GPUs and CPUs and publishes the CSVs;
the suite ships the rows of its lineup's models, under timm's file names, with each file's commit
and date (suite/reference/timm/SOURCES.csv). A device's images/sec beside the same model at the same
precision and image size on an RTX 4090 or 5090 says at once whether a setup is healthy: an H100
well below a 4090 is a setup to look at.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

import pandas as pd

#: timm's precision words in its file names -> (our precision, our precision mode).
PRECISIONS = {"amp": ("fp16", "autocast"), "amp_bf16": ("bf16", "autocast"), "bf16": ("bf16", "pure"),
              "fp16": ("fp16", "pure"), "fp32": ("fp32", "none")}

_NAME = re.compile(r"benchmark-(?P<bench>infer|train)-(?P<precision>[a-z0-9_]+)-(?P<layout>nchw|nhwc)-"
                   r"pt(?P<torch>\d+)-(?P<backend>cu\d+|cpu)-(?P<device>.+?)(?P<dynamo>-dynamo)?\.csv")

#: timm's device words -> a readable name.
DEVICES = {"rtx3090": "RTX 3090", "rtx4090": "RTX 4090", "4090": "RTX 4090", "5090": "RTX 5090",
           "pro6000maxq": "RTX Pro 6000 Max-Q", "cpu-i9_10940x": "Core i9-10940X (CPU)",
           "i9_10940x": "Core i9-10940X (CPU)", "i7_12700h": "Core i7-12700H (CPU)"}


def describe(file_name: str) -> dict[str, object] | None:
    """What a timm benchmark file measured, read from its name; None for a name it does not follow."""
    match = _NAME.fullmatch(file_name)
    if match is None or match["precision"] not in PRECISIONS:
        return None
    precision, mode = PRECISIONS[match["precision"]]
    digits = match["torch"]  # pt113: torch 1.13; pt291: torch 2.9.1
    torch_version = f"1.{digits[1:]}" if digits[0] == "1" else ".".join(digits)
    backend = match["backend"]
    device = match["device"]
    return {"file": file_name, "bench": match["bench"], "precision": precision, "precision_mode": mode,
            "channels_last": match["layout"] == "nhwc", "compiled": bool(match["dynamo"]),
            "torch": torch_version, "cuda": "" if backend == "cpu" else f"{backend[2:-1]}.{backend[-1]}",
            "reference_device": DEVICES.get(device, device), "cpu": backend == "cpu"}


@functools.lru_cache(maxsize=1)
def timm_reference() -> pd.DataFrame:
    """Every shipped row with what its file measured: model (timm name), img_size, images_per_sec,
    batch_size, file, date, source, precision, precision_mode, compiled, channels_last, device, ..."""
    folder = importlib.resources.files("suite") / "reference" / "timm"
    with (folder / "SOURCES.csv").open("r", encoding="utf-8") as handle:
        sources = pd.read_csv(handle).set_index("file")
    frames = []
    for name in sources.index:
        meta = describe(name)
        if meta is None:
            continue
        with (folder / name).open("r", encoding="utf-8") as handle:
            rows = pd.read_csv(handle)
        prefix = "infer" if meta["bench"] == "infer" else "train"
        rows = rows.rename(columns={f"{prefix}_samples_per_sec": "images_per_sec", f"{prefix}_img_size": "img_size",
                                    f"{prefix}_batch_size": "batch_size"})
        rows["model"] = rows["model"].str.split(".").str[0]
        frames.append(rows[["model", "img_size", "images_per_sec", "batch_size"]].assign(
            **meta, date=sources.at[name, "date"], source=sources.at[name, "source"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # read once per process; callers filter


def matching(reference: pd.DataFrame, bench: str, precision: str, precision_mode: str, cpu: bool) -> pd.DataFrame:
    """The reference rows of one kind of run: the same bench, precision and mode, on a CPU or a GPU as
    ours is, and of each (device, compiled, layout) only the newest file."""
    if reference.empty:
        return reference
    rows = reference[(reference["bench"] == bench) & (reference["precision"] == precision)
                     & (reference["precision_mode"] == precision_mode) & (reference["cpu"] == cpu)]
    newest = rows.groupby(["reference_device", "compiled", "channels_last"])["date"].transform("max")
    return rows[rows["date"] == newest]
