"""The report's section "What the models learned": the pictures of `python -m suite.inspect`, side by side.

It reads the manifest `inspect/inspect.csv` in the report's results folder and the PNG files it names
(paths relative to the manifest), and runs no model. Rows are appended by every run; the last row of
a (model, weights, kind, block) supersedes the earlier ones. Without the manifest there is no section.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from suite.results import INSPECT_COLUMNS, INSPECT_KEY, INSPECT_MANIFEST, ResultsError, read_table

if TYPE_CHECKING:
    from suite.sections import FigureBlock, Section
    from suite.tables import Table

#: Where the manifest sits under the report's --results folder (python -m suite.inspect's default --out).
MANIFEST = Path("inspect") / INSPECT_MANIFEST
COMMAND = "python -m suite.inspect --models Mixer-B/16,ViT-B/16,BiT-R50x1"

#: kind -> (title, what the picture shows).
KINDS = {
    "token-mixing": ("token-mixing units, block {block}", (
        "Each hidden unit of the block's first token-mixing layer as an image of its weights over the input tokens "
        "(the paper's Figures 4 and 5), scaled to its own largest |weight| (red +, blue −); units of opposite phase "
        "side by side, lowest spatial frequency first.")),
    "patch-embedding": ("patch-embedding units", (
        "The linear patch projection's units as RGB images (the paper's Figure 6), each scaled to its own largest "
        "|weight|, grey = 0; pairs of opposite phase side by side.")),
    "position-embedding": ("position-embedding similarity", (
        "Tile (i, j): the cosine similarity of position (i, j)'s embedding with every position (the ViT paper's "
        "Figure 7), −1 purple to 1 yellow; the class token is left out.")),
    "first-conv": ("first-convolution filters", (
        "The filters of the first convolution on pixels as RGB images, as the layer applies them (weight-"
        "standardised for BiT), each scaled to its own largest |weight|, grey = 0.")),
}


def read_manifest(path: Path) -> pd.DataFrame:
    """The manifest's current rows (a rerun's rows supersede older ones), numbers as numbers."""
    frame = read_table(path, required=INSPECT_COLUMNS)
    for column in ("block", "locality", "locality_uniform", "units"):
        if column in frame:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column].notna() & numbers.isna()
            if bad.any():
                line = int(bad.to_numpy().nonzero()[0][0]) + 2
                raise ResultsError(f"{path}: line {line}: {column} {frame[column][bad].iloc[0]!r} is not a number")
            frame[column] = numbers
    for column in ("model", "family", "weights", "weights_sha256", "kind", "file"):
        frame[column] = frame[column].astype("string").fillna("").astype(str)
    return frame.drop_duplicates(list(INSPECT_KEY), keep="last").reset_index(drop=True)


def _checkpoint(row: pd.Series) -> str:
    sha = row["weights_sha256"]
    return f"{row['weights']}" + (f" (sha256 {sha[:12]}…)" if sha else "")


def _labels(frame: pd.DataFrame) -> pd.Series:
    """The model's name, with its weights where one model was inspected with several."""
    several = frame.groupby("model")["weights"].transform("nunique") > 1
    return frame["model"].where(~several, frame["model"] + " (" + frame["weights"] + ")")


def locality_table(depth: pd.DataFrame) -> Table:
    """Model × block: the spread of the token-mixing units, and the spread of uniform weights on its grid."""
    from suite.tables import make_table

    wide = depth.pivot_table(index=["label", "weights"], columns="block", values="locality", sort=False)
    wide.columns = [f"Block {int(b)}" for b in wide.columns]
    uniform = depth.groupby(["label", "weights"], sort=False)["locality_uniform"].first()
    frame = wide.reset_index().rename(columns={"label": "Model", "weights": "Checkpoint"})
    frame.insert(2, "Uniform", uniform.to_numpy())
    return make_table("learned-locality", "Locality of the token-mixing units by depth", (
        "Mean spread of each unit's |weight| mass around its centre, in patches: 0 when every unit looks at one "
        "token; the Uniform column is the spread of equal weights on every token of the model's grid. The paper "
        "sees local units in the first blocks and global ones later."), frame)


def learned_sections(results_dir: Path) -> list[Section]:
    """The section, when `results_dir/inspect/inspect.csv` exists and has rows; else none."""
    from suite import plots
    from suite.sections import FigureBlock, Section

    path = Path(results_dir) / MANIFEST
    if not path.exists():
        return []
    frame = read_manifest(path)
    if frame.empty:
        return []
    frame["label"] = _labels(frame)
    section = Section("learned", "What the models learned", intro=(
        f"Read off the weights by {COMMAND.split(' --')[0]} (no forward pass), for the checkpoint named under each "
        "picture: the paper's Figures 4-6 for Mixers, their counterparts for ViT and ResNet/BiT."))
    depth = frame[frame["kind"] == "locality"].dropna(subset=["block", "locality"])
    if len(depth):
        depth = depth.assign(grid=depth["tile"])
        section.tables.append(locality_table(depth))
        section.figures.append(FigureBlock(
            "learned-locality", "Locality of the token-mixing units by depth",
            "Spread of the token-mixing units' weights per block (0: one token); dotted, the spread of uniform "
            "weights on the grid. Local first and global later reads as a rising curve.",
            lambda d=depth: plots.locality_by_depth(d)))
    for _, row in frame[frame["kind"].isin(list(KINDS))].iterrows():
        block = _picture_block(row, path.parent)
        if block is None:
            section.notes.append(f"{path} names {row['file']}, which is missing: rerun python -m suite.inspect "
                                 f"--models '{row['model']}' --weights … to draw it again.")
        else:
            section.figures.append(block)
    return [section]


def _picture_block(row: pd.Series, folder: Path) -> FigureBlock | None:
    """One picture of the manifest as a figure of the page, its checkpoint in the caption; None if its file is gone."""
    import matplotlib.image

    from suite import plots
    from suite.sections import FigureBlock
    from suite.tables import slugify

    png = folder / row["file"]
    if not png.is_file():
        return None
    title, what = KINDS[row["kind"]]
    block = int(row["block"]) if pd.notna(row["block"]) else None
    caption = f"Checkpoint: {_checkpoint(row)}. {what}"
    if row["kind"] == "token-mixing" and pd.notna(row["locality"]):
        caption += f" Spread {row['locality']:.2f} patches (uniform: {row['locality_uniform']:.2f})."
    slug = slugify(f"learned-{row['label']}-{row['kind']}-{block or ''}")
    return FigureBlock(slug, f"{row['label']}: {title.format(block=block)}", caption,
                       lambda p=png: plots.picture(matplotlib.image.imread(p)[..., :3]))
