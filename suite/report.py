"""`python -m suite.report`: the paper's tables and Pareto plots from our results, in one HTML file.

The report reads only results files (`results/flops.csv`, `results/throughput.csv`,
`results/fewshot.csv`, each optional) and the paper's published figures shipped with the suite; it
never runs a model. It renders one self-contained page (styles and figures inline, so it can be
mailed) and writes beside it every table as CSV and LaTeX and every figure as PDF and SVG.

Throughput results from several devices or precisions get one section per (device, precision).
A missing results file leaves its part of the page out, and the page names the command that makes
it. A malformed file is refused with one line that names the file and the row.
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from suite.cli import ArgumentParser, HelpFormatter, fail
from suite.report_learned import learned_sections
from suite.ranking import discordant_pairs, spearman
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS, THROUGHPUT_STATUSES, ResultsError, part_files, read_table, write_atomic

PROG = "python -m suite.report"

#: results file kind -> the command that produces it.
COMMANDS = {
    "flops": "python -m suite.flops --models all",
    "throughput": "python -m suite.throughput --models all",
    "fewshot": "python -m suite.fewshot --shots 5",
}
#: results file kind -> what the page loses without it.
ENABLES = {
    "flops": "parameter counts and GMACs (Table 1, the cost table, accuracy against GMACs)",
    "throughput": "throughput tables and figures, the comparison with the paper's Table 3",
    "fewshot": "few-shot tables and the accuracy/throughput and accuracy/GMACs frontiers",
}

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


# --------------------------------------------------------------------------------------------------
# Loading and validating
# --------------------------------------------------------------------------------------------------

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


def load_paper() -> dict[str, pd.DataFrame]:
    """The paper's Tables 1-3 as shipped in `suite/paper/` (package data)."""
    folder = importlib.resources.files("suite") / "paper"
    tables = {}
    for name in ("mixer_table1_specs", "mixer_table2_sota", "mixer_table3_scale"):
        with (folder / f"{name}.csv").open("r", encoding="utf-8") as handle:
            tables[name] = pd.read_csv(handle)
    return tables


# --------------------------------------------------------------------------------------------------
# The page's building blocks
# --------------------------------------------------------------------------------------------------

@dataclass
class Table:
    """One table: `frame` holds the values (exported to CSV), `display` the formatted text."""

    slug: str
    title: str
    caption: str
    frame: pd.DataFrame
    display: pd.DataFrame
    marked: set[tuple[int, str]] = field(default_factory=set)
    numeric: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)

    def hide(self, *columns: str) -> Table:
        """Keep `columns` in the exports but not on the page (e.g. what the section heading says)."""
        self.display = self.display.drop(columns=list(columns))
        return self

    @property
    def rows(self) -> list[list[tuple[str, str]]]:
        """Each row as (text, css class) cells, for the template."""
        out = []
        for position, (_, row) in enumerate(self.display.iterrows()):
            cells = []
            for column in self.display.columns:
                classes = []
                if column in self.numeric:
                    classes.append("num")
                if (position, column) in self.marked:
                    classes.append("diff")
                cells.append((str(row[column]), " ".join(classes)))
            out.append(cells)
        return out


@dataclass
class FigureBlock:
    """One figure: built on demand, then inlined as SVG and exported as PDF and SVG."""

    slug: str
    title: str
    caption: str
    build: Callable[[], Any]
    wide: bool = False
    svg: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class Section:
    slug: str
    title: str
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureBlock] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    environment: list[tuple[str, str]] = field(default_factory=list)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, spec: str = ",.0f") -> str:
    """A number in the given format spec, '–' where there is none."""
    if _missing(value):
        return "–"
    try:
        return f"{float(value):{spec}}"
    except (TypeError, ValueError):
        return str(value)


def _text(value: Any) -> str:
    return "–" if _missing(value) else str(value)


def _rate(value: Any) -> str:
    """Images/sec with the digits that matter: 12,345 / 123.4 / 0.123."""
    if _missing(value):
        return "–"
    value = float(value)
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _ratio(value: Any) -> str:
    """A ratio that stays readable far below 1: 1.16, 0.44, 1/12,700."""
    if _missing(value) or float(value) <= 0:
        return "–"
    value = float(value)
    return f"{value:.3g}" if value >= 0.01 else f"1/{float(f'{1 / value:.3g}'):,.0f}"


def make_table(slug: str, title: str, caption: str, frame: pd.DataFrame,
               formats: dict[str, Callable[[Any], str]] | None = None,
               marked: set[tuple[int, str]] | None = None) -> Table:
    """A table whose `frame` is exported as is and whose display applies `formats` per column."""
    frame = frame.reset_index(drop=True)
    formats = formats or {}
    display = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        default = (lambda v: _fmt(v, ",.4g")) if pd.api.types.is_float_dtype(frame[column]) else _text
        formatter = formats.get(column, default)
        display[column] = [formatter(v) for v in frame[column]]
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    return Table(slug, title, caption, frame, display, marked or set(), numeric)


# --------------------------------------------------------------------------------------------------
# The content: one function per part of the page
# --------------------------------------------------------------------------------------------------

M = 1e6


def counting_table(flops: pd.DataFrame) -> Table:
    """Every counted model: parameters with and without head, by part, GMACs and GFLOPs."""
    frame = flops.copy()
    frame["mixer_rule"] = frame["mixer_rule"].fillna("")
    frame = frame.drop_duplicates(["model", "img_size", "mixer_rule"], keep="last")
    order = {family: i for i, family in enumerate(("mlp", "attention", "conv", "hybrid"))}
    frame = frame.assign(_order=frame["family"].map(order).fillna(len(order)))
    frame = frame.sort_values(["_order", "gmacs"])
    out = pd.DataFrame({
        "Model": frame["model"], "Family": frame["family"], "Image size": frame["img_size"].astype(int),
        "Params (M)": frame["params"] / M, "Params w/o head (M)": frame["params_no_head"] / M,
        "Stem (M)": frame["params_stem"] / M, "Blocks (M)": frame["params_blocks"] / M,
        "Head (M)": frame["params_head"] / M, "GMACs": frame["gmacs"], "GFLOPs (2×MACs)": 2 * frame["gmacs"],
    })
    if frame["mixer_rule"].str.len().gt(0).any():
        out.insert(3, "Mixer D_S rule", frame["mixer_rule"].replace("", "–").tolist())
    millions = lambda v: _fmt(v, ",.1f")  # noqa: E731
    formats = {c: millions for c in out.columns if c.endswith("(M)")}
    formats.update({"GMACs": lambda v: _fmt(v, ",.2f"), "GFLOPs (2×MACs)": lambda v: _fmt(v, ",.2f")})
    return make_table("counting", "Parameters and multiply-accumulates", (
        "Counted from each model's graph (matrix products and convolutions, attention products "
        "included), one multiply-accumulate = one MAC; GFLOPs = 2 × GMACs. Parameters by part sum to the total; "
        "the paper's Table 1 counts them without the classifier head."), out, formats)


def table1(paper: pd.DataFrame, flops: pd.DataFrame | None) -> Table:
    """The paper's Table 1 with our parameter count beside its own; differences marked."""
    ours = pd.DataFrame(columns=["model", "params_no_head", "gmacs"])
    if flops is not None:
        at224 = flops[flops["img_size"] == 224].drop_duplicates("model", keep="last")
        ours = at224[["model", "params_no_head", "gmacs"]]
    merged = paper.merge(ours, on="model", how="left")
    ours_m = merged["params_no_head"] / M
    out = pd.DataFrame({
        "Model": merged["model"], "Layers": merged["layers"], "Patch": merged["patch"],
        "Hidden C": merged["hidden_c"], "Tokens S": merged["seq_len_s_at_224"],
        "MLP D_C": merged["mlp_dim_dc"], "MLP D_S": merged["mlp_dim_ds"],
        "Params paper (M)": merged["params_m_no_head"], "Params ours (M)": ours_m,
        "Difference (M)": ours_m - merged["params_m_no_head"], "GMACs ours": merged["gmacs"],
    })
    # The paper rounds to whole millions: a difference shows when our rounding disagrees.
    differs = ours_m.notna() & (ours_m.round() != merged["params_m_no_head"])
    marked = {(i, c) for i in np.flatnonzero(differs) for c in ("Params ours (M)", "Difference (M)")}
    formats = {"Params ours (M)": lambda v: _fmt(v, ",.2f"), "Difference (M)": lambda v: _fmt(v, "+,.2f"),
               "GMACs ours": lambda v: _fmt(v, ",.2f"), "Params paper (M)": lambda v: _fmt(v, ",.0f")}
    caption = ("The paper's Table 1 (Mixer specifications at 224×224, parameters without the classifier head) "
               "with our count beside it. The paper rounds to whole millions; a highlighted cell means our "
               "count rounds to a different number.")
    if flops is None:
        caption += " Our counts are missing: run " + COMMANDS["flops"] + "."
    elif int(differs.sum()):
        caption += f" {int(differs.sum())} model(s) differ."
    table = make_table("table1", "Table 1: Mixer specifications", caption, out, formats, marked)
    return table


def join(left: pd.DataFrame, right: pd.DataFrame, on: Sequence[str] = ("model", "img_size"),
         how: str = "inner") -> pd.DataFrame:
    """Merge `right`'s columns into `left` on (model, img_size); `right` wins where both have a column.

    Harnesses may write more columns than their schema (throughput.csv carries `params`, say), so
    a plain merge would rename both copies to `params_x` / `params_y`.
    """
    overlap = [c for c in right.columns if c in left.columns and c not in on]
    return left.drop(columns=overlap).merge(right, on=list(on), how=how)


def sweep_rows(throughput: pd.DataFrame) -> pd.DataFrame:
    """The batch-sweep rows (bench 'infer', or no bench column: files of earlier suite versions);
    batch-1 latency rows are a measurement of their own and never compete for the best throughput."""
    if "bench" not in throughput.columns:
        return throughput
    return throughput[throughput["bench"].fillna("infer").astype(str) == "infer"]


def best_throughput(rows: pd.DataFrame) -> pd.DataFrame:
    """The fastest ok row per (model, img_size): max images/sec over batch sizes and settings."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return ok
    best = ok.loc[ok.groupby(["model", "img_size"])["images_per_sec"].idxmax()]
    return best.sort_values("images_per_sec", ascending=False).reset_index(drop=True)


def cost_table(slug: str, best: pd.DataFrame, flops: pd.DataFrame | None) -> Table:
    """Per model: family, parameters, GMACs, best images/sec with its batch, memory, MFU, device, precision."""
    frame = best.copy()
    if flops is not None:
        counted = flops.drop_duplicates(["model", "img_size"], keep="last")[
            ["model", "img_size", "params", "params_no_head", "gmacs"]]
        frame = join(frame, counted, how="left")
    else:
        frame["params"] = np.nan
        frame["params_no_head"] = np.nan
        frame["gmacs"] = np.nan
    frame["gmacs"] = frame["gmacs"].fillna(frame["macs_per_image"] / 1e9)
    settings = [_settings(r) for _, r in frame.iterrows()]
    out = pd.DataFrame({
        "Model": frame["model"], "Family": frame["family"], "Image size": frame["img_size"].astype(int),
        "Params (M)": frame["params"] / M, "Params w/o head (M)": frame["params_no_head"] / M,
        "GMACs": frame["gmacs"], "Best images/s": frame["images_per_sec"],
        "Batch": frame["batch_size"].astype(int), "Settings": settings,
        "Peak memory (MB)": frame["peak_memory_mb"], "MFU (%)": frame["mfu"] * 100,
        "Device": frame["device_name"], "Precision": frame["precision"],
    })
    formats = {"Params (M)": lambda v: _fmt(v, ",.1f"), "Params w/o head (M)": lambda v: _fmt(v, ",.1f"),
               "GMACs": lambda v: _fmt(v, ",.2f"), "Best images/s": _rate,
               "Peak memory (MB)": lambda v: _fmt(v, ",.0f"), "MFU (%)": lambda v: _fmt(v, ",.1f")}
    return make_table(f"cost-{slug}", "Cost of every model measured", (
        "Best throughput over the batch sizes and settings swept (the paper reports the best over batch "
        "sizes too); the batch size, settings, peak memory and model-FLOPs utilization are those of the best "
        "run. MFU = 2 × MACs × images/s ÷ the peak FLOP/s the harness measured with one large matmul. "
        "Device and precision are in the section's title and in the exported table."),
        out, formats).hide("Device", "Precision")


def _settings(row: pd.Series) -> str:
    parts = []
    mode = str(row.get("precision_mode", "")).strip()
    if mode and mode.lower() not in ("none", "nan"):
        parts.append(mode)
    if str(row.get("channels_last")).lower() in ("true", "1", "1.0"):
        parts.append("channels_last")
    compiled = str(row.get("compile", "")).strip()
    if compiled and compiled.lower() not in ("false", "0", "0.0", "nan", "none", ""):
        parts.append("compile" if compiled.lower() in ("true", "1", "1.0") else f"compile={compiled}")
    return ", ".join(parts) or "eager"


def paper_throughput(table3: pd.DataFrame) -> pd.DataFrame:
    """The paper's TPU-v3 images/sec/core per (model, img_size): equal across a model's pre-training rows."""
    return (table3.dropna(subset=["throughput_img_s_core_tpuv3"])
            .groupby(["model", "img_size"], as_index=False)
            .agg(family=("family", "first"), paper=("throughput_img_s_core_tpuv3", "first")))


def compare_with_paper(best: pd.DataFrame, table3: pd.DataFrame) -> pd.DataFrame:
    """Our best images/sec beside the paper's, for the (model, img_size) pairs both have."""
    paper = paper_throughput(table3)
    ours = best[["model", "img_size", "family", "images_per_sec"]].rename(columns={"images_per_sec": "ours"})
    both = ours.merge(paper[["model", "img_size", "paper"]], on=["model", "img_size"], how="inner")
    return both.sort_values("ours", ascending=False).reset_index(drop=True)


def rank_agreement(both: pd.DataFrame) -> dict[str, Any]:
    """Spearman's rank correlation between our and the paper's throughput, and the pairs whose order flips."""
    ours, theirs = both["ours"].tolist(), both["paper"].tolist()
    rho, p_value = spearman(ours, theirs)
    flips = []
    for i, j in discordant_pairs(ours, theirs):
        faster, slower = both.iloc[i], both.iloc[j]
        flips.append({"faster here": _label(faster), "ours faster": faster["ours"],
                      "ours slower": slower["ours"], "slower here": _label(slower),
                      "paper faster": slower["paper"], "paper slower": faster["paper"]})
    return {"n": len(both), "rho": rho, "p_value": p_value, "flips": pd.DataFrame(flips)}


def _label(row: pd.Series) -> str:
    return f"{row['model']} @{int(row['img_size'])}" if int(row["img_size"]) != 224 else str(row["model"])


def table3_comparison(slug: str, both: pd.DataFrame, agreement: dict[str, Any]) -> Table:
    out = pd.DataFrame({
        "Model": [_label(r) for _, r in both.iterrows()], "Family": both["family"],
        "Ours images/s": both["ours"], "Our rank": both["ours"].rank(ascending=False, method="min").astype(int),
        "Paper images/s/core (TPU-v3)": both["paper"],
        "Paper rank": both["paper"].rank(ascending=False, method="min").astype(int),
        "Ours ÷ paper": both["ours"] / both["paper"],
    })
    marked = {(i, c) for i, (_, r) in enumerate(out.iterrows()) if r["Our rank"] != r["Paper rank"]
              for c in ("Our rank", "Paper rank")}
    formats = {"Ours images/s": _rate, "Paper images/s/core (TPU-v3)": lambda v: _fmt(v, ",.0f"),
               "Ours ÷ paper": _ratio}
    rho = agreement["rho"]
    p_value = agreement["p_value"]
    p_text = "p < 0.001" if p_value < 1e-3 else f"p = {p_value:.2g}"
    summary = (f"Spearman's rank correlation ρ = {rho:.3f} over {agreement['n']} models ({p_text})"
               if not math.isnan(rho) else
               f"Rank correlation needs at least 3 models in both tables with distinct throughputs; {agreement['n']} here")
    return make_table(f"table3-{slug}", "Table 3 the paper's way: throughput against the paper's", (
        f"Sorted by our throughput. {summary}. Highlighted ranks differ from the paper's. Only models the paper "
        "measured at the same image size appear; its figure is per TPU-v3 core, ours per device, so compare "
        "orders rather than magnitudes."), out, formats, marked)


def flips_table(slug: str, flips: pd.DataFrame) -> Table:
    """Pairs in the opposite order to the paper's; the export keeps the four throughputs as numbers."""
    frame = flips.rename(columns={
        "faster here": "Faster here", "slower here": "Slower here", "ours faster": "Here: faster (images/s)",
        "ours slower": "Here: slower (images/s)", "paper slower": "Paper: faster-here model (images/s/core)",
        "paper faster": "Paper: slower-here model (images/s/core)"})
    frame = frame[["Faster here", "Slower here", "Here: faster (images/s)", "Here: slower (images/s)",
                   "Paper: faster-here model (images/s/core)", "Paper: slower-here model (images/s/core)"]]
    table = make_table(f"flips-{slug}", "Pairs whose order flips against the paper", (
        "Each row: a model that runs faster than another here, while the paper (TPU-v3 images/sec/core) "
        "has the other one ahead."), frame)
    table.display = pd.DataFrame({
        "Faster here": frame["Faster here"], "Slower here": frame["Slower here"],
        "Here (images/s)": [f"{_rate(a)} vs {_rate(b)}" for a, b in
                            zip(frame["Here: faster (images/s)"], frame["Here: slower (images/s)"])],
        "Paper (images/s/core)": [f"{_fmt(a, ',.0f')} vs {_fmt(b, ',.0f')}" for a, b in
                                  zip(frame["Paper: faster-here model (images/s/core)"],
                                      frame["Paper: slower-here model (images/s/core)"])],
    })
    table.numeric = {"Here (images/s)", "Paper (images/s/core)"}
    return table


# --------------------------------------------------------------------------------------------------
# Few-shot
# --------------------------------------------------------------------------------------------------

def fewshot_points(fewshot: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, weights, dataset, shots, l2_rule), with a plot label."""
    key = ["model", "weights", "dataset", "shots", "seed", "l2_rule"]
    rows = fewshot.drop_duplicates(key, keep="last")
    grouped = rows.groupby(["model", "weights", "dataset", "shots", "l2_rule"], as_index=False).agg(
        family=("family", "first"), img_size=("img_size", "first"), accuracy=("accuracy", "mean"),
        std=("accuracy", "std"), seeds=("seed", "nunique"))
    several = grouped.groupby("model")["weights"].nunique()
    grouped["label"] = [f"{m} ({w})" if several[m] > 1 and w else m for m, w in zip(grouped["model"], grouped["weights"])]
    grouped["shots"] = grouped["shots"].astype(int)
    return grouped


def fewshot_tables(points: pd.DataFrame) -> list[Table]:
    """One table per (shots, l2 rule): model × dataset, mean ± std over seeds, in percent."""
    tables = []
    for (shots, rule), part in points.groupby(["shots", "l2_rule"], sort=True):
        datasets = sorted(part["dataset"].unique())
        rows = []
        for label, model_rows in part.groupby("label", sort=False):
            first = model_rows.iloc[0]
            row: dict[str, Any] = {"Model": label, "Family": first["family"], "Weights": first["weights"]}
            by_dataset = model_rows.set_index("dataset")
            for dataset in datasets:
                row[dataset] = by_dataset["accuracy"].get(dataset, np.nan) * 100
                row[f"{dataset} std"] = by_dataset["std"].get(dataset, np.nan) * 100
            row["Seeds"] = int(model_rows["seeds"].min())
            if len(datasets) > 1:
                values = [row[d] for d in datasets]
                row["Average"] = float(np.mean(values)) if not any(math.isnan(v) for v in values) else np.nan
            rows.append(row)
        frame = pd.DataFrame(rows)
        sort_by = "Average" if "Average" in frame else datasets[0]
        frame = frame.sort_values(sort_by, ascending=False, na_position="last").reset_index(drop=True)
        display_columns = ["Model", "Family", "Weights", *datasets, *(["Average"] if len(datasets) > 1 else []), "Seeds"]
        table = make_table(f"fewshot-{shots}shot-{slugify(rule)}", f"{shots}-shot accuracy (ℓ2 rule: {rule or '–'})", (
            f"Linear {shots}-shot top-1 accuracy (%) of frozen features through the ℓ2-regularized least-squares "
            f"probe, mean ± std over seeds; the regularization strength was chosen by the rule “{rule or '–'}”."),
            frame, {})
        display = pd.DataFrame({c: table.display[c] for c in ("Model", "Family", "Weights")})
        for dataset in datasets:
            display[dataset] = [_mean_std(m, s) for m, s in zip(frame[dataset], frame[f"{dataset} std"])]
        if len(datasets) > 1:
            display["Average"] = [_fmt(v, ".1f") for v in frame["Average"]]
        display["Seeds"] = frame["Seeds"].astype(str)
        table.display = display[display_columns]
        table.numeric = set(display_columns) - {"Model", "Family", "Weights"}
        tables.append(table)
    return tables


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if not math.isnan(std) else f"{mean:.1f}"


def _rule_for_plots(points: pd.DataFrame, shots: int) -> str:
    """The ℓ2 rule a figure shows: the one with most results at that shot count, ties by name ('fixed' first)."""
    counts = points[points["shots"] == shots]["l2_rule"].value_counts()
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]


# --------------------------------------------------------------------------------------------------
# Assembling the page
# --------------------------------------------------------------------------------------------------

def _env_rows(frame: pd.DataFrame) -> list[tuple[str, str]]:
    rows = []
    for column in ENVIRONMENT_COLUMNS:
        values = [str(v) for v in frame[column].dropna().unique() if str(v).strip()]
        if column == "date" and values:
            values = sorted(values)
            text = values[0] if len(values) == 1 else f"{values[0]} … {values[-1]}"
        else:
            text = "; ".join(values[:4]) + (f" (+{len(values) - 4} more)" if len(values) > 4 else "")
        rows.append((column, text or "–"))
    return rows


def build_sections(results: dict[str, pd.DataFrame | None], paper: dict[str, pd.DataFrame]) -> list[Section]:
    """Every section of the page, in reading order; figures are built later (see render)."""
    from suite import plots

    flops, throughput, fewshot = results["flops"], results["throughput"], results["fewshot"]
    sections: list[Section] = []

    counting = Section("counting", "Parameters and cost")
    counting.tables.append(table1(paper["mixer_table1_specs"], flops))
    if flops is not None:
        counting.tables.append(counting_table(flops))
        cost = flops.drop_duplicates(["model", "img_size"], keep="last").assign(
            params_m=lambda f: f["params"] / M,
            label=lambda f: [f"{m} @{int(s)}" if s != 224 else m for m, s in zip(f["model"], f["img_size"])])
        counting.figures.append(FigureBlock(
            "gmacs-params", "Multiply-accumulates against parameters",
            "Every counted model at its image size (labelled where it is not 224); log-log axes. Models above "
            "the cloud spend many MACs per parameter (small patches, high resolution, convolutions).",
            lambda d=cost: plots.scatter_frontier(d, "params_m", "gmacs", x_label="parameters (M)",
                                                  y_label="GMACs per image", x_sense=None, y_sense=None,
                                                  log_y=True, size=(10.0, 5.6)), wide=True))
    else:
        counting.notes.append(f"No counting results: run {COMMANDS['flops']} for parameters and GMACs.")
    sections.append(counting)

    points = fewshot_points(fewshot) if fewshot is not None else None
    if throughput is not None:
        for (device_name, precision), rows in sweep_rows(throughput).groupby(["device_name", "precision"], sort=True):
            sections.append(device_section(device_name, precision, rows, flops, points, paper))

    if points is not None:
        sections.append(fewshot_section(points, flops, throughput))

    paper_section = Section("paper", "The paper's own figures", intro=(
        "Redrawn from the tables shipped with the suite (suite/paper/), for reading our figures beside them."))
    jft = paper["mixer_table3_scale"]
    jft = jft[(jft["pretrain"] == "JFT-300M") & (jft["img_size"] == 224)].copy()
    jft = jft.sort_values("imnet_top1").drop_duplicates("model", keep="last")
    jft["label"] = jft["model"]
    jft["accuracy"] = jft["imnet_top1"] / 100
    paper_section.figures.append(FigureBlock(
        "paper-figure3-right", "Paper, Figure 3 (right): ImageNet top-1 against TPU-v3 throughput",
        "JFT-300M pre-training, fine-tuned at 224 (the paper's Table 3; the longer schedule where a model has two "
        "rows). Dashed: the Pareto frontier.",
        lambda d=jft: plots.scatter_frontier(d, "throughput_img_s_core_tpuv3", "accuracy",
                                             x_label="images / sec / core (TPU-v3)", y_label="ImageNet top-1",
                                             percent_y=True)))
    sota = paper["mixer_table2_sota"].dropna(subset=["tpuv3_core_days_k"]).copy()
    sota["label"] = [f"{m} ({p})" if (sota["model"] == m).sum() > 1 else m for m, p in zip(sota["model"], sota["pretrain"])]
    sota["accuracy"] = sota["imnet_top1"] / 100
    paper_section.figures.append(FigureBlock(
        "paper-figure2-left", "Paper, Figure 2 (left): ImageNet top-1 against pre-training cost",
        "The paper's Table 2 models; cost in thousands of TPU-v3 core-days. Dashed: the Pareto frontier "
        "(less cost, more accuracy).",
        lambda d=sota: plots.scatter_frontier(d, "tpuv3_core_days_k", "accuracy",
                                              x_label="pre-training cost (k TPU-v3 core-days)",
                                              y_label="ImageNet top-1", x_sense="min", percent_y=True)))
    sections.append(paper_section)

    sections.append(environment_section(results))
    return sections


def device_section(device_name: str, precision: str, rows: pd.DataFrame, flops: pd.DataFrame | None,
                   points: pd.DataFrame | None, paper: dict[str, pd.DataFrame]) -> Section:
    """Everything measured on one device at one precision: cost table, Table 3, figures."""
    from suite import plots

    slug = slugify(f"{device_name}-{precision}")
    devices = ", ".join(sorted(rows["device"].dropna().astype(str).unique()))
    section = Section(f"throughput-{slug}", f"Throughput on {device_name} ({precision})",
                      intro=f"Device {devices or '–'}; {len(rows)} runs over {rows['model'].nunique()} models.")
    section.environment = _env_rows(rows)
    failed = rows[rows["status"] != "ok"]
    if len(failed):
        counts = failed["status"].value_counts()
        section.notes.append("Runs that did not finish: " + ", ".join(f"{n} {s.upper()}" for s, n in counts.items())
                             + " (a batch that ran out of memory is left out of the best-of sweep).")
    best = best_throughput(rows)
    never_ok = sorted(set(rows["model"]) - set(best["model"]))
    if never_ok:
        section.notes.append("No successful run for: " + ", ".join(never_ok) + ".")
        if "error" in rows:
            errors = rows[rows["model"].isin(never_ok) & (rows["status"] == "error")].dropna(subset=["error"])
            for model, message in errors.drop_duplicates("model")[["model", "error"]].itertuples(index=False):
                text = " ".join(str(message).split())
                section.notes.append(f"{model} failed: {text[:160]}{'…' if len(text) > 160 else ''}")
    if best.empty:
        return section
    section.tables.append(cost_table(slug, best, flops))

    both = compare_with_paper(best, paper["mixer_table3_scale"])
    if len(both):
        agreement = rank_agreement(both)
        section.tables.append(table3_comparison(slug, both, agreement))
        section.comparison = {"n": agreement["n"], "rho": agreement["rho"], "p_value": agreement["p_value"],
                              "flips": len(agreement["flips"])}
        if len(agreement["flips"]):
            section.tables.append(flips_table(slug, agreement["flips"]))
        both = both.assign(label=[_label(r) for _, r in both.iterrows()])
        section.figures.append(FigureBlock(
            f"ours-vs-paper-{slug}", "Our throughput against the paper's",
            "One point per model in both; a model above the trend runs relatively faster here than on TPU-v3.",
            lambda d=both: plots.ours_vs_paper(d, f"here: images / sec ({precision})")))
    else:
        section.notes.append("None of these models appears in the paper's Table 3 at the same image size.")

    curves = rows[rows["status"] == "ok"].groupby(["model", "img_size", "batch_size"], as_index=False).agg(
        family=("family", "first"), images_per_sec=("images_per_sec", "max"))
    sizes = curves.groupby("model")["img_size"].nunique()
    curves["model"] = [f"{m} @{int(s)}" if sizes[m] > 1 else m for m, s in zip(curves["model"], curves["img_size"])]
    section.figures.append(FigureBlock(
        f"batch-{slug}", "Throughput against batch size",
        "Images/sec at each batch size (the best setting where several were swept); log-log axes.",
        lambda d=curves: plots.throughput_vs_batch(d)))

    with_params = best.copy()
    if flops is not None:
        counted = flops.drop_duplicates(["model", "img_size"], keep="last")[["model", "img_size", "params"]]
        with_params = join(with_params, counted, how="left")
        with_params["params_m"] = with_params["params"] / M
        with_params["label"] = [_label(r) for _, r in with_params.iterrows()]
        section.figures.append(FigureBlock(
            f"params-{slug}", "Parameters against throughput", "Best images/sec per model against its parameters.",
            lambda d=with_params: plots.scatter_frontier(
                d, "images_per_sec", "params_m", x_label=f"images / sec ({precision})", y_label="parameters (M)",
                x_sense=None, y_sense=None, log_y=True)))
    else:
        section.notes.append(f"Parameters against throughput needs counting results: run {COMMANDS['flops']}.")

    if points is not None:
        for shots in sorted(points["shots"].unique()):
            rule = _rule_for_plots(points, shots)
            part = points[(points["shots"] == shots) & (points["l2_rule"] == rule)]
            joined = join(part, best[["model", "img_size", "images_per_sec"]])
            if joined.empty:
                section.notes.append(f"No model has both {shots}-shot accuracy and throughput here at the same image size.")
                continue
            section.figures.append(FigureBlock(
                f"acc-throughput-{shots}shot-{slug}", f"{shots}-shot accuracy against throughput",
                f"The paper's Figure 3 (right) with our numbers: linear {shots}-shot accuracy (ℓ2 rule {rule}) "
                "against best images/sec; dashed, the Pareto frontier (faster and more accurate).",
                lambda d=joined: plots.scatter_frontier(
                    d, "images_per_sec", "accuracy", x_label=f"images / sec ({precision})",
                    y_label="few-shot accuracy", percent_y=True, panel="dataset"),
                wide=joined["dataset"].nunique() > 1))
    else:
        section.notes.append(f"Accuracy against throughput needs few-shot results: run {COMMANDS['fewshot']}.")
    return section


def fewshot_section(points: pd.DataFrame, flops: pd.DataFrame | None, throughput: pd.DataFrame | None) -> Section:
    from suite import plots

    section = Section("fewshot", "Few-shot accuracy", intro=(
        "Frozen pre-logits features, a linear ℓ2-regularized least-squares probe on n images per class, "
        "accuracy on the held-out split; mean ± std over seeds."))
    section.tables.extend(fewshot_tables(points))
    cost = None
    if flops is not None:
        cost = flops.drop_duplicates(["model", "img_size"], keep="last")[["model", "img_size", "gmacs"]]
    elif throughput is not None:
        cost = (throughput.dropna(subset=["macs_per_image"]).drop_duplicates(["model", "img_size"], keep="last")
                .assign(gmacs=lambda f: f["macs_per_image"] / 1e9)[["model", "img_size", "gmacs"]])
    if cost is None or cost.empty:
        section.notes.append(f"Accuracy against GMACs needs counting results: run {COMMANDS['flops']}.")
        return section
    for shots in sorted(points["shots"].unique()):
        rule = _rule_for_plots(points, shots)
        part = points[(points["shots"] == shots) & (points["l2_rule"] == rule)]
        joined = join(part, cost)
        if joined.empty:
            section.notes.append(f"No model has both {shots}-shot accuracy and a MAC count at the same image size.")
            continue
        section.figures.append(FigureBlock(
            f"acc-gmacs-{shots}shot", f"{shots}-shot accuracy against GMACs",
            f"Linear {shots}-shot accuracy (ℓ2 rule {rule}) against multiply-accumulates per image; dashed, the "
            "Pareto frontier (cheaper and more accurate).",
            lambda d=joined: plots.scatter_frontier(
                d, "gmacs", "accuracy", x_label="GMACs per image", y_label="few-shot accuracy", x_sense="min",
                percent_y=True, panel="dataset"), wide=joined["dataset"].nunique() > 1))
    return section


def environment_section(results: dict[str, pd.DataFrame | None]) -> Section:
    """One table: each environment field (rows) as recorded in each results file (columns)."""
    section = Section("environment", "Environment and method")
    columns = {f"{kind}.csv": dict(_env_rows(frame)) for kind, frame in results.items() if frame is not None}
    if columns:
        frame = pd.DataFrame({"Field": list(ENVIRONMENT_COLUMNS),
                              **{name: [values[c] for c in ENVIRONMENT_COLUMNS] for name, values in columns.items()}})
        section.tables.append(make_table(
            "environment", "Environment of the results", "Recorded with every row of each results file; several "
            "values are listed where rows differ. A dash: not recorded (e.g. CUDA versions on a CPU).", frame))
    return section


# --------------------------------------------------------------------------------------------------
# Rendering and writing
# --------------------------------------------------------------------------------------------------

def _latex(table: Table) -> str:
    align = "".join("r" if c in table.numeric else "l" for c in table.display.columns)
    text = table.display.to_latex(index=False, escape=True, column_format=align)
    for plain, tex in (("±", r"$\pm$"), ("–", "--"), ("÷", r"$\div$"), ("×", r"$\times$"), ("ℓ", r"$\ell$"),
                       ("ρ", r"$\rho$")):
        text = text.replace(plain, tex)
    return text


def write_exports(sections: Sequence[Section], folder: Path, progress: bool = True) -> None:
    """Each table as CSV and LaTeX; each figure built, inlined and saved as PDF and SVG."""
    from tqdm import tqdm

    from suite import plots

    for section in sections:
        for table in section.tables:
            csv_path = folder / f"table-{table.slug}.csv"
            tex_path = folder / f"table-{table.slug}.tex"
            write_atomic(csv_path, table.frame.to_csv(index=False))
            write_atomic(tex_path, _latex(table))
            table.files = [csv_path.name, tex_path.name]
    figures = [f for s in sections for f in s.figures]
    for block in tqdm(figures, desc="figures", unit="fig", disable=not progress or not figures, file=sys.stderr):
        document, paths = plots.save_figure(block.build(), folder / f"figure-{block.slug}", salt=block.slug)
        block.svg = plots.inline_svg(document)
        block.files = [p.name for p in paths]


def render_html(sections: Sequence[Section], context: dict[str, Any]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("suite", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = environment.get_template("report.html.j2")
    return template.render(sections=sections, **context)


def build_report(results_dir: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    """Read the results, write the page and its exports; return what was written (for the summary)."""
    results = load_results(results_dir)
    paper = load_paper()
    sections = build_sections(results, paper)
    sections[-1:-1] = learned_sections(results_dir)  # before "Environment and method"; none without inspect.csv
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{folder}: cannot create the report folder ({exc.strerror})") from None
    write_exports(sections, folder, progress)
    missing = [{"file": f"{results_dir / kind}.csv", "enables": ENABLES[kind], "command": COMMANDS[kind]}
               for kind, frame in results.items() if frame is None]
    present = {kind: len(frame) for kind, frame in results.items() if frame is not None}
    context = {
        "title": "Vision architectures, measured the MLP-Mixer paper's way",
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "results_dir": str(results_dir), "missing": missing, "present": present,
        "palette": _palette(),
    }
    write_atomic(out, render_html(sections, context))
    return {"out": out, "sections": sections, "missing": missing, "present": present}


def _palette() -> list[tuple[str, str]]:
    from suite.plots import FAMILY_STYLE

    return [(label, colour) for colour, _, label in FAMILY_STYLE.values()]


def _summary(report: dict[str, Any]) -> str:
    sections = report["sections"]
    tables = sum(len(s.tables) for s in sections)
    figures = sum(len(s.figures) for s in sections)
    lines = [f"wrote {report['out']}"]
    width = max(len(s.title) for s in sections)
    for s in sections:
        lines.append(f"  {s.title:<{width}}  {len(s.tables):>2} tables  {len(s.figures):>2} figures")
    lines.append(f"  exports beside it: {tables} tables as CSV + LaTeX, {figures} figures as PDF + SVG")
    for item in report["missing"]:
        lines.append(f"  missing {item['file']}: run {item['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, formatter_class=HelpFormatter, description=(
        "Render the report: the paper's tables and Pareto plots from the results files, beside the paper's own\n"
        "figures, as one self-contained HTML page. Runs no model. Every table is also written as CSV and\n"
        "LaTeX, every figure as PDF and SVG, in the folder of --out.\n\n"
        "Results files (each optional): flops.csv, throughput.csv, fewshot.csv in --results."),
        epilog="examples:\n  python -m suite.report\n  python -m suite.report --results gpu-results --out reports/h100/index.html")
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder holding the results CSVs")
    parser.add_argument("--out", type=Path, default=Path("reports/index.html"), help="the HTML page to write")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.results.exists() and not args.results.is_dir():
        fail(PROG, f"{args.results}: not a folder (--results takes the folder holding the CSVs)")
    if args.out.exists() and args.out.is_dir():
        fail(PROG, f"{args.out}: is a folder; --out takes the HTML file to write, e.g. {args.out / 'index.html'}")
    try:
        report = build_report(args.results, args.out, progress=not args.no_progress)
    except ResultsError as exc:
        fail(PROG, str(exc))
    except OSError as exc:
        fail(PROG, f"{exc.filename or args.out}: cannot write ({exc.strerror})")
    print(_summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
