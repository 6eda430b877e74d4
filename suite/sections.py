"""The report's sections: what goes on the page, in reading order, from the result frames.

Each builder turns results into a Section of tables (suite.tables) and figures (suite.plots, drawn
later, at render time); a section whose results are missing says which command makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from suite.results import COMMANDS, ENVIRONMENT_COLUMNS
from suite.tables import (M, Table, best_throughput, compare_with_paper, cost_table, counting_table, fewshot_points,
                          fewshot_tables, flips_table, join, label, rank_agreement, rule_for_plots, slugify,
                          make_table, sweep_rows, table1, table3_comparison)


#: results file kind -> what the page loses without it.
ENABLES = {
    "flops": "parameter counts and GMACs (Table 1, the cost table, accuracy against GMACs)",
    "throughput": "throughput tables and figures, the comparison with the paper's Table 3",
    "fewshot": "few-shot tables and the accuracy/throughput and accuracy/GMACs frontiers",
}


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
        both = both.assign(label=[label(r) for _, r in both.iterrows()])
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
        with_params["label"] = [label(r) for _, r in with_params.iterrows()]
        section.figures.append(FigureBlock(
            f"params-{slug}", "Parameters against throughput", "Best images/sec per model against its parameters.",
            lambda d=with_params: plots.scatter_frontier(
                d, "images_per_sec", "params_m", x_label=f"images / sec ({precision})", y_label="parameters (M)",
                x_sense=None, y_sense=None, log_y=True)))
    else:
        section.notes.append(f"Parameters against throughput needs counting results: run {COMMANDS['flops']}.")

    if points is not None:
        for shots in sorted(points["shots"].unique()):
            rule = rule_for_plots(points, shots)
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
        rule = rule_for_plots(points, shots)
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

