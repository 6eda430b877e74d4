"""Pre-training cost on this device: the paper's other cost axis, from measured training throughput.

The paper weighs every model by its total pre-training cost in TPU-v3 core-days (Tables 2 and 3).
Here the same schedules are priced on the user's device: images seen = epochs x dataset size (the
paper's Table 3 epochs; the dataset sizes below, with their source), divided by the model's best
training images/sec (`python -m suite.throughput --bench train`, the best over the batch sweep at
the pre-training resolution, 224), gives device-seconds, -hours and -days. Beside them: the paper's
core-days, the ratio of training to inference throughput here and in the paper (whose own figures
put it near 4 for the large models; far outside 3-5 deserves a note), and how the two orders agree.
Fine-tuned rows (448, 512, ...) carry the cost of their 224 pre-training, as in the paper.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from suite.cli import ArgumentParser, HelpFormatter, fail, positive_int
from suite.ranking import discordant_pairs, spearman

PROG = "python -m suite.cost"

#: Training images per epoch of each pre-training set, and where the number comes from.
DATASET_IMAGES: dict[str, tuple[int, str]] = {
    "JFT-300M": (300_000_000, "the paper, section 3: JFT-300M has 300M examples"),
    "ImageNet-21k": (14_000_000, "the paper, section 3: ImageNet-21k contains 14M images"),
    "ImageNet": (1_281_167, "the ILSVRC-2012 training set (the paper: 1.3M training examples)"),
}

#: The pre-training resolution of every Table 3 model; fine-tuned rows are priced at it.
PRETRAIN_IMG_SIZE = 224

#: Outside this range the ratio of training to inference throughput deserves a note.
EXPECTED_TRAIN_RATIO = (3.0, 5.0)


def best_per_model(throughput: pd.DataFrame, bench: str, img_size: int = PRETRAIN_IMG_SIZE) -> pd.DataFrame:
    """The best ok images/sec per (model, device, precision) of one bench at one image size."""
    if "bench" not in throughput.columns:
        rows = throughput.assign(bench="infer")
    else:
        rows = throughput.assign(bench=throughput["bench"].fillna("infer"))
    rows = rows[(rows["bench"] == bench) & (rows["status"] == "ok") & (rows["img_size"] == img_size)]
    if rows.empty:
        return pd.DataFrame(columns=["model", "device_name", "precision", "images_per_sec", "batch_size"])
    best = rows.loc[rows.groupby(["model", "device_name", "precision"])["images_per_sec"].idxmax()]
    return best[["model", "device_name", "precision", "images_per_sec", "batch_size"]].reset_index(drop=True)


def paper_schedules(table3: pd.DataFrame) -> pd.DataFrame:
    """Table 3's rows with their schedule: pre-training set, epochs, images seen, the paper's core-days
    and its implied training images/sec/core."""
    rows = table3.dropna(subset=["tpuv3_core_days_k", "pretrain_epochs"]).copy()
    sizes = {name: images for name, (images, _) in DATASET_IMAGES.items()}
    rows = rows[rows["pretrain"].isin(sizes)]
    rows["images_seen"] = rows["pretrain_epochs"] * rows["pretrain"].map(sizes)
    rows["paper_core_days"] = rows["tpuv3_core_days_k"] * 1000.0
    rows["paper_train_img_s_core"] = rows["images_seen"] / (rows["paper_core_days"] * 86400.0)
    at_224 = (table3[table3["img_size"] == PRETRAIN_IMG_SIZE].groupby("model")["throughput_img_s_core_tpuv3"].first())
    rows["paper_train_ratio"] = rows["model"].map(at_224) / rows["paper_train_img_s_core"]
    return rows.reset_index(drop=True)


def distinct_schedules(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pre-training set, epochs, device, precision): fine-tuned rows repeat the cost
    of their pre-training; the row at the pre-training resolution is kept where there is one."""
    keys = [c for c in ("model", "pretrain", "pretrain_epochs", "device_name", "precision") if c in rows.columns]
    order = rows.assign(_native=(rows["img_size"] != PRETRAIN_IMG_SIZE)).sort_values("_native", kind="stable")
    return order.drop_duplicates(keys).drop(columns="_native").reset_index(drop=True)


def pretraining_cost(throughput: pd.DataFrame, table3: pd.DataFrame, images_seen: int | None = None) -> pd.DataFrame:
    """Per Table 3 row (or per model, for `images_seen`) and device/precision: device-days here
    beside the paper's core-days, and the training-to-inference ratio both ways."""
    train = best_per_model(throughput, "train").rename(columns={"images_per_sec": "train_img_s",
                                                                "batch_size": "train_batch"})
    infer = best_per_model(throughput, "infer").rename(columns={"images_per_sec": "infer_img_s",
                                                                "batch_size": "infer_batch"})
    if train.empty:
        return pd.DataFrame()
    measured = train.merge(infer, on=["model", "device_name", "precision"], how="left")
    if images_seen is not None:
        rows = measured.assign(pretrain="custom", pretrain_epochs=math.nan, img_size=PRETRAIN_IMG_SIZE,
                               images_seen=float(images_seen))
    else:
        rows = paper_schedules(table3).merge(measured, on="model", how="inner")
    rows["device_seconds"] = rows["images_seen"] / rows["train_img_s"]
    rows["device_hours"] = rows["device_seconds"] / 3600.0
    rows["device_days"] = rows["device_seconds"] / 86400.0
    rows["train_ratio"] = rows["infer_img_s"] / rows["train_img_s"]
    low, high = EXPECTED_TRAIN_RATIO
    rows["ratio_note"] = [
        "" if not isinstance(r, float) or math.isnan(r) or low <= r <= high else
        f"{model}: training is {r:.1f}x slower than inference here, outside the {low:g}-{high:g} the paper's "
        f"figures suggest"
        for model, r in zip(rows["model"], rows["train_ratio"])]
    return rows.reset_index(drop=True)


def cost_agreement(rows: pd.DataFrame) -> dict:
    """Spearman's rank correlation of our device-days and the paper's core-days, and the pairs whose
    order flips (cheaper here, dearer in the paper)."""
    ours, paper = rows["device_days"].tolist(), rows["paper_core_days"].tolist()
    rho, p_value = spearman(ours, paper)
    flips = []
    for dearer, cheaper in discordant_pairs(ours, paper):
        a, b = rows.iloc[cheaper], rows.iloc[dearer]
        flips.append({"Cheaper here": schedule_label(a), "Dearer here": schedule_label(b),
                      "Here (device-days)": f"{a['device_days']:.3g} vs {b['device_days']:.3g}",
                      "Paper (TPU-v3 core-days)": f"{a['paper_core_days']:.0f} vs {b['paper_core_days']:.0f}"})
    return {"n": len(rows), "rho": rho, "p_value": p_value, "flips": pd.DataFrame(flips)}


def schedule_label(row: pd.Series) -> str:
    epochs = row.get("pretrain_epochs")
    where = f"{row['pretrain']}, {int(epochs)} ep" if isinstance(epochs, (int, float)) and not math.isnan(epochs) \
        else str(row["pretrain"])
    return f"{row['model']} ({where})"


def main(argv: list[str] | None = None) -> int:
    from suite.tables import load_paper
    from suite.results import ResultsError, read_table

    parser = ArgumentParser(prog=PROG, formatter_class=HelpFormatter, description=__doc__.split("\n", 1)[1].strip())
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder holding throughput.csv")
    parser.add_argument("--images-seen", type=positive_int, default=None,
                        help="price this many training images per model instead of the paper's schedules")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    path = args.results / "throughput.csv"
    try:
        throughput = read_table(path)
    except ResultsError as exc:
        fail(PROG, str(exc))
    rows = pretraining_cost(throughput, load_paper()["mixer_table3_scale"], args.images_seen)
    if rows.empty:
        fail(PROG, f"{path} has no training rows at {PRETRAIN_IMG_SIZE}: run python -m suite.throughput --bench train")
    columns = ["model", "pretrain", "pretrain_epochs", "images_seen", "device_name", "precision", "train_img_s",
               "device_hours", "device_days", "paper_core_days", "train_ratio", "paper_train_ratio"]
    rows = distinct_schedules(rows)
    shown = rows[[c for c in columns if c in rows.columns]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.images_seen is None:
        agreement = cost_agreement(rows)
        print(f"\nSpearman's rho (device-days here vs the paper's core-days) = {agreement['rho']:.3f} over "
              f"{agreement['n']} rows; {len(agreement['flips'])} pair(s) in the other order")
    for note in sorted(set(rows["ratio_note"]) - {""}):
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        rows.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
