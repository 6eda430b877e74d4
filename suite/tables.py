"""The report's tables and their statistics: the table type and its formatters, the paper's
published tables, and one builder per table (Table 1, counts, cost, Table 3 the paper's way and the
pairs whose order flips, few-shot). Builders take result frames and return Tables; they run no model."""

from __future__ import annotations

import importlib.resources
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from suite.ranking import discordant_pairs, spearman
from suite.results import COMMANDS


def load_paper() -> dict[str, pd.DataFrame]:
    """The paper's Tables 1-3 as shipped in `suite/paper/` (package data)."""
    folder = importlib.resources.files("suite") / "paper"
    tables = {}
    for name in ("mixer_table1_specs", "mixer_table2_sota", "mixer_table3_scale"):
        with (folder / f"{name}.csv").open("r", encoding="utf-8") as handle:
            tables[name] = pd.read_csv(handle)
    return tables


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


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, spec: str = ",.0f") -> str:
    """A number in the given format spec, '–' where there is none."""
    if missing(value):
        return "–"
    try:
        return f"{float(value):{spec}}"
    except (TypeError, ValueError):
        return str(value)


def text(value: Any) -> str:
    return "–" if missing(value) else str(value)


def rate(value: Any) -> str:
    """Images/sec with the digits that matter: 12,345 / 123.4 / 0.123."""
    if missing(value):
        return "–"
    value = float(value)
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def ratio(value: Any) -> str:
    """A ratio that stays readable far below 1: 1.16, 0.44, 1/12,700."""
    if missing(value) or float(value) <= 0:
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
        default = (lambda v: fmt(v, ",.4g")) if pd.api.types.is_float_dtype(frame[column]) else text
        formatter = formats.get(column, default)
        display[column] = [formatter(v) for v in frame[column]]
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    return Table(slug, title, caption, frame, display, marked or set(), numeric)


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
    millions = lambda v: fmt(v, ",.1f")  # noqa: E731
    formats = {c: millions for c in out.columns if c.endswith("(M)")}
    formats.update({"GMACs": lambda v: fmt(v, ",.2f"), "GFLOPs (2×MACs)": lambda v: fmt(v, ",.2f")})
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
    formats = {"Params ours (M)": lambda v: fmt(v, ",.2f"), "Difference (M)": lambda v: fmt(v, "+,.2f"),
               "GMACs ours": lambda v: fmt(v, ",.2f"), "Params paper (M)": lambda v: fmt(v, ",.0f")}
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


NOISE_MARKS = {"noisy": "*", "very noisy": "**"}


def cost_table(slug: str, best: pd.DataFrame, flops: pd.DataFrame | None,
               latency: pd.DataFrame | None = None) -> Table:
    """Per model: family, parameters, GMACs, best images/sec with its batch (noisy ones marked), memory,
    MFU, and where they were measured batch-1 latency, energy per image, power and compile time."""
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
    extra = _measured_extras(frame, latency)
    for column, values in extra.items():
        out[column] = values
    noise = frame["noise"].fillna("ok").astype(str).tolist() if "noise" in frame else ["ok"] * len(frame)
    formats = {"Params (M)": lambda v: fmt(v, ",.1f"), "Params w/o head (M)": lambda v: fmt(v, ",.1f"),
               "GMACs": lambda v: fmt(v, ",.2f"), "Best images/s": rate,
               "Peak memory (MB)": lambda v: fmt(v, ",.0f"), "MFU (%)": lambda v: fmt(v, ",.1f"),
               "Latency p50 (ms)": lambda v: fmt(v, ",.2f"), "Latency p99 (ms)": lambda v: fmt(v, ",.2f"),
               "Energy (J/image)": lambda v: fmt(v, ",.3g"), "Power (W)": lambda v: fmt(v, ",.0f"),
               "Compile (s)": lambda v: fmt(v, ",.1f")}
    marked_noise = any(NOISE_MARKS.get(n) for n in noise)
    table = make_table(f"cost-{slug}", "Cost of every model measured", (
        "Best throughput over the batch sizes and settings swept (the paper reports the best over batch "
        "sizes too); the batch size, settings, peak memory and model-FLOPs utilization are those of the best "
        "run. MFU = 2 × MACs × images/s ÷ the peak FLOP/s the harness measured with one large matmul. "
        + ("Latency: batch 1, its own measurement. " if "Latency p50 (ms)" in extra else "")
        + ("Energy and power: NVML over the best run's timed steps. " if "Energy (J/image)" in extra else "")
        + ("* marks a best run whose spread (IQR) exceeds 10% of its median, ** 25%: repeat it before trusting "
           "it. " if marked_noise else "")
        + "Device and precision are in the section's title and in the exported table."),
        out, formats).hide("Device", "Precision")
    table.display["Best images/s"] = [f"{shown}{NOISE_MARKS.get(n, '')}"
                                      for shown, n in zip(table.display["Best images/s"], noise)]
    return table


def _measured_extras(frame: pd.DataFrame, latency: pd.DataFrame | None) -> dict[str, list[Any]]:
    """The columns a device measured that not every device does: shown only where some value exists."""
    extras: dict[str, list[Any]] = {}
    if latency is not None and len(latency):
        ok = latency[latency["status"] == "ok"].drop_duplicates(["model", "img_size"], keep="last")
        by_model = ok.set_index(["model", "img_size"])
        for column, name in (("latency_p50_ms", "Latency p50 (ms)"), ("latency_p99_ms", "Latency p99 (ms)")):
            if column in by_model:
                values = [by_model[column].get((m, s), np.nan) for m, s in zip(frame["model"], frame["img_size"])]
                if any(pd.notna(v) for v in values):
                    extras[name] = values
    for column, name in (("energy_j_per_image", "Energy (J/image)"), ("power_w", "Power (W)"),
                         ("compile_s", "Compile (s)")):
        if column in frame and frame[column].notna().any():
            extras[name] = pd.to_numeric(frame[column], errors="coerce").tolist()
    return extras


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
        flips.append({"faster here": label(faster), "ours faster": faster["ours"],
                      "ours slower": slower["ours"], "slower here": label(slower),
                      "paper faster": slower["paper"], "paper slower": faster["paper"]})
    return {"n": len(both), "rho": rho, "p_value": p_value, "flips": pd.DataFrame(flips)}


def label(row: pd.Series) -> str:
    return f"{row['model']} @{int(row['img_size'])}" if int(row["img_size"]) != 224 else str(row["model"])


def table3_comparison(slug: str, both: pd.DataFrame, agreement: dict[str, Any]) -> Table:
    out = pd.DataFrame({
        "Model": [label(r) for _, r in both.iterrows()], "Family": both["family"],
        "Ours images/s": both["ours"], "Our rank": both["ours"].rank(ascending=False, method="min").astype(int),
        "Paper images/s/core (TPU-v3)": both["paper"],
        "Paper rank": both["paper"].rank(ascending=False, method="min").astype(int),
        "Ours ÷ paper": both["ours"] / both["paper"],
    })
    marked = {(i, c) for i, (_, r) in enumerate(out.iterrows()) if r["Our rank"] != r["Paper rank"]
              for c in ("Our rank", "Paper rank")}
    formats = {"Ours images/s": rate, "Paper images/s/core (TPU-v3)": lambda v: fmt(v, ",.0f"),
               "Ours ÷ paper": ratio}
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
        "Here (images/s)": [f"{rate(a)} vs {rate(b)}" for a, b in
                            zip(frame["Here: faster (images/s)"], frame["Here: slower (images/s)"])],
        "Paper (images/s/core)": [f"{fmt(a, ',.0f')} vs {fmt(b, ',.0f')}" for a, b in
                                  zip(frame["Paper: faster-here model (images/s/core)"],
                                      frame["Paper: slower-here model (images/s/core)"])],
    })
    table.numeric = {"Here (images/s)", "Paper (images/s/core)"}
    return table


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
            display["Average"] = [fmt(v, ".1f") for v in frame["Average"]]
        display["Seeds"] = frame["Seeds"].astype(str)
        table.display = display[display_columns]
        table.numeric = set(display_columns) - {"Model", "Family", "Weights"}
        tables.append(table)
    return tables


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if not math.isnan(std) else f"{mean:.1f}"


def rule_for_plots(points: pd.DataFrame, shots: int) -> str:
    """The ℓ2 rule a figure shows: the one with most results at that shot count, ties by name ('fixed' first)."""
    counts = points[points["shots"] == shots]["l2_rule"].value_counts()
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]


# --------------------------------------------------------------------------------------------------
# Beside the paper's frontier, timm's published figures and other devices
# --------------------------------------------------------------------------------------------------

def paper_points_with_ours(best: pd.DataFrame, table3: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 rows (accuracy, its TPU throughput) with our best images/sec for the same model
    at the same image size: one point per row, a panel per pre-training set (the paper's Figure 3, right)."""
    rows = table3.dropna(subset=["imnet_top1"]).copy()
    rows = rows.sort_values("pretrain_epochs").drop_duplicates(["model", "pretrain", "img_size"], keep="last")
    ours = best[["model", "img_size", "family", "images_per_sec"]]
    joined = rows.drop(columns=["family"]).merge(ours, on=["model", "img_size"], how="inner")
    joined["accuracy"] = joined["imnet_top1"] / 100
    joined["label"] = [label(r) for _, r in joined.iterrows()]
    return joined.reset_index(drop=True)


def frontier_differences(points: pd.DataFrame) -> list[str]:
    """Per pre-training set: the models on our frontier (throughput here, top-1) but not on the paper's
    (its TPU throughput, top-1), and the reverse, as sentences."""
    from suite.pareto import pareto_mask

    lines = []
    for pretrain, part in points.groupby("pretrain", sort=True):
        ours = set(part["label"][pareto_mask(part["images_per_sec"], part["accuracy"])])
        theirs = set(part["label"][pareto_mask(part["throughput_img_s_core_tpuv3"], part["accuracy"])])
        only_ours, only_theirs = sorted(ours - theirs), sorted(theirs - ours)
        if only_ours or only_theirs:
            parts = []
            if only_ours:
                parts.append(f"on our frontier only: {', '.join(only_ours)}")
            if only_theirs:
                parts.append(f"on the paper's only: {', '.join(only_theirs)}")
            lines.append(f"{pretrain}: " + "; ".join(parts) + ".")
        else:
            lines.append(f"{pretrain}: the same models are Pareto-optimal here as in the paper ({', '.join(sorted(ours))}).")
    return lines


def timm_reference_table(slug: str, best: pd.DataFrame, reference: pd.DataFrame) -> Table | None:
    """Our best images/sec beside timm's published ones for the same model, precision and image size,
    with the ratio, one column pair per reference device (compiled ones named so)."""
    if reference.empty:
        return None
    ours = best[best["timm_name"].fillna("").astype(str) != ""]
    frame = pd.DataFrame({"Model": ours["model"].tolist(), "Image size": ours["img_size"].astype(int).tolist(),
                          "Ours images/s": ours["images_per_sec"].tolist()})
    found = False
    for (device, compiled, nhwc), rows in reference.groupby(["reference_device", "compiled", "channels_last"],
                                                             sort=True):
        by = rows.groupby(["model", "img_size"])["images_per_sec"].max()
        values = [by.get((t, s), np.nan) for t, s in zip(ours["timm_name"], ours["img_size"])]
        if not any(pd.notna(v) for v in values):
            continue
        found = True
        name = f"{device}{' compiled' if compiled else ''}{' NHWC' if nhwc else ''}"
        frame[f"timm {name}"] = values
        frame[f"Ours ÷ {name}"] = [a / b if pd.notna(b) and b else np.nan for a, b in zip(frame["Ours images/s"], values)]
    if not found:
        return None
    theirs = [c for c in frame.columns if c.startswith("timm ")]
    frame = frame[frame[theirs].notna().any(axis=1)].reset_index(drop=True)
    files = ", ".join(sorted(reference["file"].unique()))
    dates = sorted(reference["date"].unique())
    formats = {c: rate for c in frame.columns if "images/s" in c or c.startswith("timm ")}
    formats.update({c: ratio for c in frame.columns if c.startswith("Ours ÷")})
    return make_table(f"timm-{slug}", "Beside timm's published throughput", (
        "timm's own benchmark.py figures for the same model, precision and image size on the devices timm "
        f"publishes, from its results files ({files}; {dates[0]} … {dates[-1]}; shipped in suite/reference/timm/). "
        "timm times a fixed batch (256 or 1024 on GPUs, 1 on CPUs) and reports the mean; ours is the best over "
        "our sweep. A ratio far below the ratio of the devices' peaks says the setup here deserves a look."),
        frame, formats)


def devices_table(throughput: pd.DataFrame) -> Table | None:
    """Best images/sec per model (rows) and device and precision (columns), with each one's ratio to the first."""
    ok = throughput[throughput["status"] == "ok"].assign(
        where=lambda f: f["device_name"].astype(str) + " (" + f["precision"].astype(str) + ")")
    if ok["where"].nunique() < 2:
        return None
    best = ok.groupby(["model", "img_size", "where"])["images_per_sec"].max().unstack("where")
    columns = list(best.columns)
    frame = best.reset_index().rename(columns={"model": "Model", "img_size": "Image size"})
    frame["Image size"] = frame["Image size"].astype(int)
    first = columns[0]
    for column in columns[1:]:
        frame[f"{column} ÷ {first}"] = frame[column] / frame[first]
    formats = {c: rate for c in columns}
    formats.update({c: ratio for c in frame.columns if "÷" in c})
    return make_table("devices", "Throughput across devices and precisions", (
        f"Best images/sec per model on every device and precision measured, and each one's ratio to {first}."),
        frame, formats)


# --------------------------------------------------------------------------------------------------
# Resolution scaling
# --------------------------------------------------------------------------------------------------

def scaling_curves(throughput: pd.DataFrame | None, flops: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (curve, image side): GMACs, best images/sec and peak memory, for every model measured or
    counted at two sizes or more. Mixer curves are told apart by their token-mixing rule (the native size
    belongs to both): 'Mixer-B/16 (D_S grows)' and 'Mixer-B/16 (D_S fixed)'."""
    parts = []
    if throughput is not None and len(throughput):
        ok = throughput[throughput["status"] == "ok"].reindex(
            columns=[*throughput.columns, *{"mixer_rule", "peak_memory_mb", "macs_per_image"} - set(throughput.columns)])
        ok = ok.assign(mixer_rule=ok["mixer_rule"].astype("string").fillna("").astype(str))
        if len(ok):
            best = ok.loc[ok.groupby(["model", "img_size", "mixer_rule"])["images_per_sec"].idxmax()]
            parts.append(best[["model", "family", "img_size", "mixer_rule", "images_per_sec", "peak_memory_mb",
                               "macs_per_image"]].assign(gmacs=lambda f: f["macs_per_image"] / 1e9))
    if flops is not None and len(flops):
        parts.append(flops.reindex(columns=["model", "family", "img_size", "mixer_rule", "gmacs"]))
    if not parts:
        return pd.DataFrame()
    frame = pd.concat(parts, ignore_index=True).reindex(
        columns=["model", "family", "img_size", "mixer_rule", "gmacs", "images_per_sec", "peak_memory_mb"])
    frame["mixer_rule"] = frame["mixer_rule"].astype("string").fillna("").astype(str)
    frame = frame.groupby(["model", "img_size", "mixer_rule"], as_index=False).agg(
        family=("family", "first"), gmacs=("gmacs", "max"), images_per_sec=("images_per_sec", "max"),
        peak_memory_mb=("peak_memory_mb", "max"))
    rows = []
    for (model, rule), part in frame.groupby(["model", "mixer_rule"], sort=False):
        if rule == "native":
            continue
        if rule in ("paper", "fixed"):
            native = frame[(frame["model"] == model) & (frame["mixer_rule"] == "native")]
            part = pd.concat([native, part])
            name = f"{model} (D_S {'grows' if rule == 'paper' else 'fixed'})"
        else:
            name = model
        rows.append(part.assign(curve=name))
    if not rows:
        return pd.DataFrame()
    curves = pd.concat(rows, ignore_index=True)
    counts = curves.groupby("curve")["img_size"].nunique()
    return curves[curves["curve"].map(counts) >= 2].sort_values(["curve", "img_size"]).reset_index(drop=True)


def scaling_slopes(curves: pd.DataFrame) -> pd.DataFrame:
    """Per curve: the least-squares slope of log(y) on log(tokens) for GMACs, images/sec and peak memory.
    Tokens grow as the square of the side, so slope 1 is linear in the tokens, 2 quadratic."""
    rows = []
    for curve, part in curves.groupby("curve", sort=False):
        tokens = np.log(part["img_size"].astype(float) ** 2)
        row = {"curve": curve, "family": part["family"].iloc[0], "sizes": ", ".join(str(int(s)) for s in part["img_size"])}
        for column in ("gmacs", "images_per_sec", "peak_memory_mb"):
            values = pd.to_numeric(part[column], errors="coerce")
            valid = values.notna() & (values > 0)
            row[column] = (float(np.polyfit(tokens[valid], np.log(values[valid]), 1)[0])
                           if valid.sum() >= 2 and tokens[valid].nunique() >= 2 else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def scaling_table(slopes: pd.DataFrame) -> Table:
    frame = slopes.rename(columns={"curve": "Curve", "family": "Family", "sizes": "Image sides",
                                   "gmacs": "GMACs slope", "images_per_sec": "Images/s slope",
                                   "peak_memory_mb": "Peak memory slope"})
    formats = {c: (lambda v: fmt(v, "+.2f")) for c in ("GMACs slope", "Images/s slope", "Peak memory slope")}
    return make_table("scaling-slopes", "How cost grows with resolution", (
        "The least-squares slope of log(quantity) on log(number of tokens) over each curve's image sides (tokens "
        "grow as the side squared): +1 is linear in the tokens, +2 quadratic; throughput falls, so its slope is "
        "negative. The paper: Mixer's cost is linear in the tokens with D_S fixed, while self-attention's is "
        "quadratic; its Appendix C rule (D_S grows with the tokens) makes token mixing quadratic again."),
        frame, formats)


# --------------------------------------------------------------------------------------------------
# Pre-training cost
# --------------------------------------------------------------------------------------------------

def pretraining_table(slug: str, rows: pd.DataFrame, agreement: dict[str, Any]) -> Table:
    """Table 3's schedules priced on this device beside the paper's TPU-v3 core-days, ranks marked where they differ."""
    out = pd.DataFrame({
        "Model": rows["model"], "Pre-training": rows["pretrain"], "Epochs": rows["pretrain_epochs"],
        "Images seen": rows["images_seen"], "Train images/s": rows["train_img_s"],
        "Device-hours": rows["device_hours"], "Device-days": rows["device_days"],
        "Our rank": rows["device_days"].rank(method="min").astype(int),
        "Paper core-days (TPU-v3)": rows["paper_core_days"],
        "Paper rank": rows["paper_core_days"].rank(method="min").astype(int),
        "Train ÷ infer here": rows["train_ratio"], "Train ÷ infer paper": rows["paper_train_ratio"],
    })
    marked = {(i, c) for i, (_, r) in enumerate(out.iterrows()) if r["Our rank"] != r["Paper rank"]
              for c in ("Our rank", "Paper rank")}
    formats = {"Epochs": lambda v: fmt(v, ",.0f"), "Images seen": lambda v: fmt(v / 1e9, ",.2f") + "G",
               "Train images/s": rate, "Device-hours": lambda v: fmt(v, ",.4g"), "Device-days": lambda v: fmt(v, ",.4g"),
               "Paper core-days (TPU-v3)": lambda v: fmt(v, ",.0f"), "Train ÷ infer here": lambda v: fmt(v, ",.1f"),
               "Train ÷ infer paper": lambda v: fmt(v, ",.1f")}
    rho, p_value = agreement["rho"], agreement["p_value"]
    summary = (f"Spearman's ρ = {rho:.3f} between our device-days and the paper's core-days over {agreement['n']} "
               f"schedules ({'p < 0.001' if p_value < 1e-3 else f'p = {p_value:.2g}'})" if not math.isnan(rho)
               else f"Rank correlation needs 3 schedules or more; {agreement['n']} here")
    table = make_table(f"pretraining-{slug}", "Pre-training cost here against the paper's", (
        f"The paper's Table 3 schedules (images seen = epochs × dataset size) at our best training throughput "
        f"(python -m suite.throughput --bench train, at 224). {summary}; highlighted ranks differ. "
        "Train ÷ infer: best inference over best training images/sec (the paper's from its own figures; its "
        "large models sit near 4). Device-hours are in the exported table."), out, formats, marked)
    return table.hide("Device-hours")
