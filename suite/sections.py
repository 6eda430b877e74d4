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
from suite.tables import (M, Table, best_throughput, compare_with_paper, cost_table, counting_table, devices_table,
                          fewshot_points, fewshot_tables, flips_table, frontier_differences, join, label, make_table,
                          paper_points_with_ours, pretraining_table, rank_agreement, rule_for_plots, scaling_curves,
                          scaling_slopes, scaling_table, slugify, sweep_rows, table1, table3_comparison,
                          timm_reference_table)


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
        sweeps = sweep_rows(throughput)
        latency = bench_rows(throughput, "latency")
        for (device_name, precision), rows in sweeps.groupby(["device_name", "precision"], sort=True):
            rows_latency = latency[(latency["device_name"] == device_name) & (latency["precision"] == precision)]
            sections.append(device_section(device_name, precision, rows, flops, points, paper, rows_latency))
        across = devices_table(sweeps)
        if across is not None:
            sections.append(Section("devices", "Across devices and precisions", tables=[across]))
        sections.extend(pretraining_sections(throughput, paper))
    scaling = scaling_section(sweep_rows(throughput) if throughput is not None else None, flops)
    if scaling is not None:
        sections.append(scaling)

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
                   points: pd.DataFrame | None, paper: dict[str, pd.DataFrame],
                   latency: pd.DataFrame | None = None) -> Section:
    """Everything measured on one device at one precision: cost table, Table 3, timm's figures beside
    ours, the paper's Figure 3 (right) with our throughput, and the figures."""
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
    section.tables.append(cost_table(slug, best, flops, latency))
    reference = timm_reference_table(slug, best, _references(rows, precision))
    if reference is not None:
        section.tables.append(reference)
    else:
        section.notes.append(f"timm publishes no {precision} throughput of these models on a "
                             f"{'CPU' if _on_cpu(rows) else 'GPU'} to set beside ours.")

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

    figure3 = paper_points_with_ours(best, paper["mixer_table3_scale"])
    if len(figure3):
        differences = frontier_differences(figure3)
        section.figures.append(FigureBlock(
            f"figure3-right-{slug}", "The paper's Figure 3 (right) with our throughput",
            "The paper's ImageNet top-1 of each Table 3 row (one panel per pre-training set) against our best "
            f"images/sec for the same model and image size on {device_name} ({precision}); dashed, the Pareto "
            "frontier (faster and more accurate). " + " ".join(differences),
            lambda d=figure3: plots.scatter_frontier(
                d, "images_per_sec", "accuracy", x_label=f"images / sec here ({precision})",
                y_label="ImageNet top-1 (paper)", percent_y=True, panel="pretrain"),
            wide=figure3["pretrain"].nunique() > 1))

    curves = rows[rows["status"] == "ok"].groupby(["model", "img_size", "batch_size"], as_index=False).agg(
        family=("family", "first"), images_per_sec=("images_per_sec", "max"))
    sizes = curves.groupby("model")["img_size"].nunique()
    curves["model"] = [f"{m} @{int(s)}" if sizes[m] > 1 else m for m, s in zip(curves["model"], curves["img_size"])]
    section.figures.append(FigureBlock(
        f"batch-{slug}", "Throughput against batch size",
        "Images/sec at each batch size (the best setting where several were swept), a panel per family; log-log "
        "axes.", lambda d=curves: plots.throughput_vs_batch(d), wide=True))

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
        figures, notes = accuracy_figures(points, best[["model", "img_size", "images_per_sec"]], "images_per_sec",
                                          f"images / sec ({precision})", "max", f"throughput-{slug}", "throughput",
                                          "best images/sec; dashed, the Pareto frontier (faster and more accurate)")
        section.figures.extend(figures)
        section.notes.extend(notes)
    else:
        section.notes.append(f"Accuracy against throughput needs few-shot results: run {COMMANDS['fewshot']}.")
    return section


def fewshot_section(points: pd.DataFrame, flops: pd.DataFrame | None, throughput: pd.DataFrame | None) -> Section:
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
    figures, notes = accuracy_figures(points, cost, "gmacs", "GMACs per image", "min", "gmacs", "GMACs",
                                      "multiply-accumulates per image; dashed, the Pareto frontier (cheaper and "
                                      "more accurate)")
    section.figures.extend(figures)
    section.notes.extend(notes)
    return section


def accuracy_figures(points: pd.DataFrame, cost: pd.DataFrame, x: str, x_label: str, x_sense: str, slug: str,
                     what: str, caption: str) -> tuple[list[FigureBlock], list[str]]:
    """Few-shot accuracy against one cost (`x` of `cost`), one figure per shot count, a panel per dataset."""
    from suite import plots

    figures, notes = [], []
    for shots in sorted(points["shots"].unique()):
        rule = rule_for_plots(points, shots)
        part = points[(points["shots"] == shots) & (points["l2_rule"] == rule)]
        joined = join(part, cost)
        if joined.empty:
            notes.append(f"No model has both {shots}-shot accuracy and {what} here at the same image size.")
            continue
        figures.append(FigureBlock(
            f"acc-{slug}-{shots}shot", f"{shots}-shot accuracy against {what}",
            f"Linear {shots}-shot accuracy (ℓ2 rule {rule}) against {caption}.",
            lambda d=joined: plots.scatter_frontier(
                d, x, "accuracy", x_label=x_label, y_label="few-shot accuracy", x_sense=x_sense, percent_y=True,
                panel="dataset"), wide=joined["dataset"].nunique() > 1))
    return figures, notes


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


def bench_rows(throughput: pd.DataFrame, bench: str) -> pd.DataFrame:
    """The rows of one bench ('latency', 'train'); none in files written before the bench column."""
    if "bench" not in throughput.columns:
        return throughput.iloc[0:0]
    return throughput[throughput["bench"].fillna("infer").astype(str) == bench]


def _on_cpu(rows: pd.DataFrame) -> bool:
    return bool(rows["device"].astype(str).str.startswith("cpu").all())


def _references(rows: pd.DataFrame, precision: str) -> pd.DataFrame:
    """timm's rows measured the way ours were: the same bench, precision and mode, on the same kind of device."""
    from suite.reference import matching, timm_reference

    modes = rows["precision_mode"].dropna().astype(str).unique() if "precision_mode" in rows else ["none"]
    mode = modes[0] if len(modes) == 1 else "autocast"
    return matching(timm_reference(), "infer", precision, mode, _on_cpu(rows))


def scaling_section(sweeps: pd.DataFrame | None, flops: pd.DataFrame | None) -> Section | None:
    """GMACs, images/sec and peak memory against image side for every model measured at several sizes."""
    from suite import plots

    curves = scaling_curves(sweeps, flops)
    if curves.empty:
        return None
    section = Section("scaling", "Resolution scaling", intro=(
        "Every model counted or measured at two image sides or more (python -m suite.flops --img-size 224,448 and "
        "python -m suite.throughput --img-size 224,320,448; Mixers under --mixer-rule paper and fixed); log-log axes."))
    section.tables.append(scaling_table(scaling_slopes(curves)))
    for column, what in (("gmacs", "GMACs per image"), ("images_per_sec", "best images / sec"),
                         ("peak_memory_mb", "peak memory (MB)")):
        if curves[column].notna().sum() >= 2:
            section.figures.append(FigureBlock(
                f"scaling-{column}", f"{what[0].upper() + what[1:]} against image side",
                f"{what[0].upper() + what[1:]} at each image side; the slopes are in the table above.",
                lambda d=curves, c=column, w=what: plots.scaling(d, c, w)))
    return section


def pretraining_sections(throughput: pd.DataFrame, paper: dict[str, pd.DataFrame]) -> list[Section]:
    """Per device and precision with training rows: Table 3's schedules priced here, and the paper's
    Figure 2 (left) and Figure 3 (left) with our cost axis."""
    from suite.cost import EXPECTED_TRAIN_RATIO, cost_agreement, distinct_schedules, pretraining_cost

    train = bench_rows(throughput, "train")
    sweeps = sweep_rows(throughput)
    sections = []
    for (device_name, precision), rows in train.groupby(["device_name", "precision"], sort=True):
        measured = pd.concat([rows, sweeps[(sweeps["device_name"] == device_name) & (sweeps["precision"] == precision)]])
        cost = pretraining_cost(measured, paper["mixer_table3_scale"])
        slug = slugify(f"{device_name}-{precision}")
        section = Section(f"pretraining-{slug}", f"Pre-training cost on {device_name} ({precision})", intro=(
            "The paper's other cost axis: its pre-training schedules priced at our best training throughput "
            "(the paper's pre-training step: forward, cross-entropy, backward, global-norm clip at 1, AdamW)."))
        if cost.empty:
            section.notes.append("No training row at 224 of a model in the paper's Table 3: run "
                                 "python -m suite.throughput --bench train --models mixer,vit,bit.")
            sections.append(section)
            continue
        schedules = distinct_schedules(cost)
        agreement = cost_agreement(schedules)
        section.tables.append(pretraining_table(slug, schedules, agreement))
        if len(agreement["flips"]):
            section.tables.append(make_table(f"pretraining-flips-{slug}", "Pairs whose cost order flips against "
                                             "the paper", "Each row: a schedule cheaper here than another, while the "
                                             "paper's core-days have the other one cheaper.", agreement["flips"]))
        outside = schedules[schedules["ratio_note"] != ""].drop_duplicates("model")
        if len(outside):
            low, high = EXPECTED_TRAIN_RATIO
            listed = ", ".join(f"{m} {r:.1f}" for m, r in zip(outside["model"], outside["train_ratio"]))
            section.notes.append(f"Training is slower than inference by a factor outside the {low:g}-{high:g} the "
                                 f"paper's figures suggest for: {listed}.")
        for figure in _cost_figures(cost, paper, device_name, precision, slug):
            section.figures.append(figure)
        sections.append(section)
    return sections


def _cost_figures(cost: pd.DataFrame, paper: dict[str, pd.DataFrame], device_name: str, precision: str,
                  slug: str) -> list[FigureBlock]:
    from suite import plots

    figures = []
    jft = cost[(cost["pretrain"] == "JFT-300M") & (cost["img_size"] == 224)].copy()
    if len(jft):
        jft["accuracy"] = jft["imnet_top1"] / 100
        jft["label"] = [f"{m} ({int(e)} ep)" if (jft["model"] == m).sum() > 1 else m
                        for m, e in zip(jft["model"], jft["pretrain_epochs"])]
        figures.append(FigureBlock(
            f"figure3-left-{slug}", "The paper's Figure 3 (left) with our cost axis",
            f"ImageNet top-1 of the paper's JFT-300M rows at 224 against their pre-training cost in device-days on "
            f"{device_name} ({precision}); dashed, the Pareto frontier (cheaper and more accurate).",
            lambda d=jft: plots.scatter_frontier(d, "device_days", "accuracy", x_label="pre-training device-days here",
                                                 y_label="ImageNet top-1 (paper)", x_sense="min", percent_y=True)))
    table2 = paper["mixer_table2_sota"]
    sota = table2.merge(cost.sort_values("img_size", ascending=False)
                        .drop_duplicates(["model", "pretrain"])[["model", "pretrain", "device_days", "family"]],
                        on=["model", "pretrain"], how="inner", suffixes=("_paper", ""))
    if len(sota):
        sota["accuracy"] = sota["imnet_top1"] / 100
        sota["label"] = [f"{m} ({p})" for m, p in zip(sota["model"], sota["pretrain"])]
        figures.append(FigureBlock(
            f"figure2-left-{slug}", "The paper's Figure 2 (left) with our cost axis",
            "ImageNet top-1 of the paper's Table 2 models that have a Table 3 schedule, against its cost in "
            f"device-days on {device_name} ({precision}); dashed, the Pareto frontier.",
            lambda d=sota: plots.scatter_frontier(d, "device_days", "accuracy", x_label="pre-training device-days here",
                                                  y_label="ImageNet top-1 (paper)", x_sense="min", percent_y=True)))
    return figures
