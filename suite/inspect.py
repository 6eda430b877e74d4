"""`python -m suite.inspect`: what the models learned, the MLP-Mixer paper's Figures 4-6 -> results/inspect/.

For each model, with the weights asked for (timm's pretrained tag, a seeded random init or a local
checkpoint, loaded exactly as the few-shot harness loads them), the pictures its architecture is
known by:

- Mixer: the token-mixing units of the first blocks as images over the token grid, pairs of
  opposite phase side by side (Figures 4, 5); the patch-embedding units as P×P RGB images
  (Figure 6); the spread of the token-mixing units of every block, a curve across depth.
- ViT: the patch-embedding filters and the cosine similarity of the position embeddings.
- BiT / ResNet: the filters of the first convolution.
- Hybrids: what they have (a conv-stem Mixer's blocks still mix tokens; its stem is a ResNet stem,
  so its first convolution stands in for the patch embedding), and one line for what is skipped.

Every picture is written as PNG (its pixels exactly the weights' colours, for the report), PDF and
SVG, with the arrays behind it in an .npz file and one row in the manifest `inspect.csv`, so that
`python -m suite.report` finds them. No forward pass is run; everything is read off the weights.
"""

from __future__ import annotations

import argparse
import io
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors  # noqa: E402
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from suite import learned, plots  # noqa: E402
from suite.cli import ArgumentParser, HelpFormatter, add_models_argument, fail, positive_int  # noqa: E402
from suite.features import Weights, WeightsError, load_model, parse_weights  # noqa: E402
from suite.results import (INSPECT_MANIFEST, ResultsError, append_rows, ensure_writable,  # noqa: E402
                           environment, write_atomic)
from suite.zoo import ModelSpec, UnknownModelError, resolve_models  # noqa: E402

PROG = "python -m suite.inspect"
KINDS = ("token-mixing", "patch-embedding", "position-embedding", "first-conv")
DEFAULT_MODELS = "Mixer-B/16,ViT-B/16,BiT-R50x1"
#: Smallest side, in PNG pixels, of one tile (a unit, a filter, a similarity map): tiles are upscaled to it.
TILE_PIXELS = 28
#: Colours of the pictures: signed unit weights (red +, blue −, white 0), similarities, the gaps between tiles.
SIGNED_CMAP, SIMILARITY_CMAP, GAP = "RdBu_r", "viridis", "#d9d9d9"


@dataclass
class Picture:
    """One figure of one model: its pixels (at one pixel per weight), how to name it, the arrays behind it."""

    kind: str
    title: str
    pixels: np.ndarray  # (H, W, 3) in [0, 1]
    scale: int  # PNG pixels per weight
    block: int | None = None
    layer: str = ""
    units: int = 0
    tile: str = ""
    locality: float = float("nan")
    opposite_pairs: int | None = None
    note: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"{self.kind}-block{self.block}" if self.block is not None else self.kind


def colourise(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Values as RGB in [0, 1] through `cmap` on [vmin, vmax]; NaN (the gaps between tiles) in the gap colour."""
    colours = matplotlib.colormaps[cmap].with_extremes(bad=GAP)
    rgba = colours(matplotlib.colors.Normalize(vmin, vmax)(np.ma.masked_invalid(values)))
    return rgba[..., :3]


def tile_scale(tile_shape: Sequence[int]) -> int:
    """PNG pixels per weight, so a tile is at least TILE_PIXELS on its longer side."""
    return max(1, math.ceil(TILE_PIXELS / max(tile_shape[:2])))


def png_pixels(picture: Picture) -> np.ndarray:
    """The PNG's pixels as uint8: each weight a scale×scale square (nearest, never interpolated)."""
    big = np.repeat(np.repeat(picture.pixels, picture.scale, axis=0), picture.scale, axis=1)
    return np.round(np.clip(big, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# The pictures of one model
# --------------------------------------------------------------------------------------------------

def _unit_grid(units: np.ndarray, max_units: int | None, signed: bool
               ) -> tuple[np.ndarray, learned.Arrangement, int]:
    """Arrange units (pairs of opposite phase side by side) and lay out the first `max_units` as a mosaic.

    Signed units (token mixing) go through the diverging colour map; RGB filters are their own colours.
    Returns the mosaic's RGB pixels, the arrangement and the mosaic's columns.
    """
    arrangement = learned.arrange(units)
    shown = arrangement.order[:max_units] if max_units else arrangement.order
    columns = learned.grid_columns(len(shown))
    if signed:
        return colourise(learned.mosaic(learned.signed_tiles(units[shown]), columns), SIGNED_CMAP, -1, 1), \
            arrangement, columns
    values = learned.mosaic(learned.rgb_tiles(units[shown]), columns)
    return np.where(np.isnan(values), matplotlib.colors.to_rgb(GAP), values), arrangement, columns


def token_mixing_pictures(model: nn.Module, name: str, blocks: int, max_units: int | None
                          ) -> tuple[list[Picture], pd.DataFrame]:
    """The first `blocks` token-mixing grids, and the locality of every block (block, locality, grid, uniform)."""
    units_per_block = learned.token_mixing_units(model)
    rows, cols = units_per_block[0].shape[1:]
    uniform = learned.uniform_spread(rows, cols)
    localities = [learned.locality(units) for units in units_per_block]
    pictures = []
    for index, units in enumerate(units_per_block[:blocks]):
        pixels, arrangement, columns = _unit_grid(units, max_units, signed=True)
        block = index + 1
        shown = min(len(units), max_units or len(units))
        pictures.append(Picture(
            "token-mixing", f"{name}: token-mixing units, block {block} ({shown} of {len(units)} over {rows}×{cols} "
            f"tokens)", pixels, tile_scale((rows, cols)), block=block, layer=f"blocks.{index}.mlp_tokens.fc1",
            units=len(units), tile=f"{rows}×{cols}", locality=localities[index],
            opposite_pairs=arrangement.opposite_pairs(),
            note=f"each unit scaled to its own max |w| (red +, blue −); pairs of opposite phase side by side, "
                 f"low frequencies first; spread {localities[index]:.2f} patches (uniform: {uniform:.2f})",
            arrays={"units": units, "order": arrangement.order, "partner_cosine": arrangement.partner_cosine,
                    "spread": learned.spreads(units), "centre": learned.centres(units),
                    "columns": np.asarray(columns)}))
    depth = pd.DataFrame({"block": np.arange(1, len(localities) + 1), "locality": localities,
                          "units": [len(units) for units in units_per_block], "grid": f"{rows}×{cols}",
                          "locality_uniform": uniform})
    return pictures, depth


#: kind -> (how to find the pixel convolution, what its units are called in a title).
FILTER_LAYERS: dict[str, tuple[Callable[[nn.Module], tuple[str, nn.Conv2d]], str]] = {
    "patch-embedding": (learned.patch_embedding_module, "patch-embedding units"),
    "first-conv": (learned.first_conv_module, "first convolution"),
}


def filter_picture(model: nn.Module, name: str, kind: str, max_units: int | None) -> Picture:
    """A grid of RGB pixel filters (patch embedding or first convolution), pairs of opposite phase side by side."""
    finder, called = FILTER_LAYERS[kind]
    layer, conv = finder(model)
    filters = learned.conv_filters(conv)
    pixels, arrangement, columns = _unit_grid(filters, max_units, signed=False)
    size = f"{filters.shape[1]}×{filters.shape[2]}×3"
    shown = min(len(filters), max_units or len(filters))
    return Picture(kind, f"{name}: {called} {layer} ({shown} of {len(filters)}, {size})", pixels,
                   tile_scale(filters.shape[1:3]), layer=layer, units=len(filters), tile=size,
                   opposite_pairs=arrangement.opposite_pairs(),
                   note="each filter scaled to its own max |w| (grey is 0); pairs of opposite phase side by side, "
                        "low frequencies first",
                   arrays={"filters": filters, "order": arrangement.order,
                           "partner_cosine": arrangement.partner_cosine,
                           "columns": np.asarray(columns)})


def position_picture(model: nn.Module, name: str) -> Picture:
    """Each patch position's cosine similarity with every other, tiles laid out as the positions are."""
    similarity = learned.position_similarity(model)
    rows, cols = similarity.shape[:2]
    values = learned.mosaic(similarity.reshape(rows * cols, rows, cols), cols)
    return Picture("position-embedding", f"{name}: position-embedding similarity ({rows}×{cols} positions)",
                   colourise(values, SIMILARITY_CMAP, -1, 1), tile_scale((rows, cols)), layer="pos_embed",
                   units=rows * cols, tile=f"{rows}×{cols}",
                   note="tile (i, j): cosine similarity of position (i, j)'s embedding with every position, "
                        "−1 (purple) to 1 (yellow)",
                   arrays={"similarity": similarity, "columns": np.asarray(cols)})


#: kind -> a check that raises MissingLayer when the model lacks the layer (cheap: no arrays).
FINDERS: dict[str, Callable[[nn.Module], Any]] = {
    "token-mixing": learned.token_mixing_modules,
    "patch-embedding": learned.patch_embedding_module,
    "position-embedding": learned.position_embedding_parameter,
    "first-conv": learned.first_conv_module,
}


def lacks(model: nn.Module, kind: str) -> str | None:
    """Why the model has no layer of `kind` (one line), or None when it has one."""
    try:
        FINDERS[kind](model)
    except learned.MissingLayer as exc:
        return str(exc)
    return None


def plan(model: nn.Module, kinds: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The kinds to draw, and for each kind skipped the one line that says why.

    With `kinds` given, each one the model lacks is skipped. With None (auto), the pictures of the
    model's architecture: token-mixing and patch embedding for a Mixer, patch and position
    embedding for a ViT, the first convolution otherwise; where the patch embedding is missing
    (a convolutional stem), the stem's first convolution stands in for it.
    """
    if kinds is None:
        if lacks(model, "token-mixing") is None:
            kinds = ["token-mixing", "patch-embedding"]
        elif lacks(model, "position-embedding") is None:
            kinds = ["patch-embedding", "position-embedding"]
        else:
            kinds = ["first-conv"]
        stand_in = lacks(model, "patch-embedding") is not None and lacks(model, "first-conv") is None
    else:
        stand_in = False
    chosen, skipped = [], {}
    for kind in kinds:
        reason = lacks(model, kind)
        if reason is None:
            chosen.append(kind)
        elif kind == "patch-embedding" and stand_in:
            chosen.append("first-conv")
            skipped[kind] = (f"{kind} skipped: {reason}; its first convolution "
                             f"({learned.first_conv_module(model)[0]}) is shown instead")
        else:
            skipped[kind] = f"{kind} skipped: {reason}"
    return chosen, skipped


def pictures_of(model: nn.Module, name: str, kinds: Sequence[str], blocks: int, max_units: int | None
                ) -> tuple[list[Picture], pd.DataFrame | None]:
    """Every picture of `kinds` (which the model has), and the locality by depth when it is a Mixer."""
    pictures: list[Picture] = []
    depth = None
    for kind in kinds:
        if kind == "token-mixing":
            grids, depth = token_mixing_pictures(model, name, blocks, max_units)
            pictures.extend(grids)
        elif kind == "position-embedding":
            pictures.append(position_picture(model, name))
        else:
            pictures.append(filter_picture(model, name, kind, max_units))
    return pictures, depth


# --------------------------------------------------------------------------------------------------
# Files and manifest rows
# --------------------------------------------------------------------------------------------------

def folder_name(spec: ModelSpec, weights: Weights) -> str:
    """One folder per (model, weights): 'mixer-b-16--random-seed-0'."""
    return "--".join(re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") for text in (spec.name, weights.tag(spec)))


def _blank(value: Any) -> Any:
    """None as an empty CSV cell, so integer columns stay integers."""
    return "" if value is None else value


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Exactly these uint8 pixels as a PNG, through a temporary file and a rename."""
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, pixels, format="png")
    write_atomic(path, buffer.getvalue())


def write_model(spec: ModelSpec, weights: Weights, pictures: Sequence[Picture], depth: pd.DataFrame | None,
                out: Path) -> list[dict[str, Any]]:
    """Write every picture (PNG, PDF, SVG), the arrays (npz) and return the manifest rows (paths relative to `out`)."""
    folder = out / folder_name(spec, weights)
    folder.mkdir(parents=True, exist_ok=True)
    tag = weights.tag(spec)
    base = {"model": spec.name, "family": spec.family, "group": spec.group, "timm_name": spec.timm_name or "",
            "weights": tag, "weights_sha256": weights.sha256, "arrays": f"{folder.name}/arrays.npz"}
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for picture in pictures:
        pixels = png_pixels(picture)
        write_png(folder / f"{picture.stem}.png", pixels)
        plots.save_figure(plots.picture(pixels / 255, picture.title, f"{tag} · {picture.note}"),
                          folder / picture.stem, salt=f"{folder.name}-{picture.stem}")
        arrays.update({f"{picture.stem}/{key}": value for key, value in picture.arrays.items()})
        rows.append({**base, "kind": picture.kind, "block": _blank(picture.block), "layer": picture.layer,
                     "units": picture.units, "tile": picture.tile, "file": f"{folder.name}/{picture.stem}.png",
                     "scale": picture.scale, "locality": picture.locality,
                     "locality_uniform": depth["locality_uniform"].iloc[0] if picture.kind == "token-mixing" else "",
                     "opposite_pairs": _blank(picture.opposite_pairs)})
    if depth is not None:
        curve = depth.assign(label=spec.name, family=spec.family)
        figure = plots.locality_by_depth(curve, f"{spec.name} ({tag}): locality by depth")
        plots.save_figure(figure, folder / "locality", salt=f"{folder.name}-locality")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150)
        write_atomic(folder / "locality.png", buffer.getvalue())
        arrays["locality/by_block"] = depth["locality"].to_numpy()
        arrays["locality/uniform"] = np.asarray(depth["locality_uniform"].iloc[0])
        for _, row in depth.iterrows():
            rows.append({**base, "kind": "locality", "block": int(row["block"]),
                         "layer": f"blocks.{int(row['block']) - 1}.mlp_tokens.fc1", "units": int(row["units"]),
                         "tile": row["grid"], "file": f"{folder.name}/locality.png", "scale": "",
                         "locality": row["locality"], "locality_uniform": row["locality_uniform"],
                         "opposite_pairs": ""})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(folder / "arrays.npz", buffer.getvalue())
    return rows


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def kind_list(text: str) -> list[str] | None:
    """'auto' (None: each model's own pictures) or a comma-separated subset of KINDS."""
    if text == "auto":
        return None
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a comma-separated subset of {','.join(KINDS)}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(kinds))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description=__doc__.split("\n", 1)[1].strip() + "\n\nDetails (the pairing rule, the locality number): "
        "docs/inspect.md.",
        epilog="examples:\n  python -m suite.inspect --models Mixer-B/16,ViT-B/16,BiT-R50x1\n"
               "  python -m suite.inspect --models Mixer-B/32 --weights my-mixer.pth --blocks 4\n"
               "  python -m suite.inspect --models mixer --weights random --kinds token-mixing --out /tmp/inspect")
    add_models_argument(parser, default=DEFAULT_MODELS)
    parser.add_argument("--weights", default="pretrained", metavar="pretrained|random|PATH",
                        help="'pretrained' (the zoo's timm tag), 'random' (seeded init) or a checkpoint PATH "
                        "(.pth/.pt/.safetensors; a state_dict, or one under 'state_dict' or 'model'), loaded as "
                        "python -m suite.fewshot loads it")
    parser.add_argument("--kinds", type=kind_list, default="auto", metavar="auto|KIND,...",
                        help=f"'auto' (each model's own pictures) or a comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--blocks", type=positive_int, default=3, metavar="N",
                        help="token-mixing grids for the first N Mixer blocks (the locality curve covers all)")
    parser.add_argument("--max-units", type=positive_int, default=None, metavar="N",
                        help="draw at most N units per grid, in drawing order (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/inspect"), metavar="DIR",
                        help=f"folder for the pictures, arrays and the manifest {INSPECT_MANIFEST}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_pretrained(specs: Sequence[ModelSpec], weights: Weights) -> None:
    """Refuse, before any model is built, models that timm has no pretrained weights for."""
    if weights.kind != "pretrained":
        return
    lacking = [spec.name for spec in specs if not spec.pretrained_tag]
    if lacking:
        raise WeightsError(f"{', '.join(lacking)}: no pretrained weights in timm; use --weights PATH (a local "
                           f"checkpoint) or --weights random")


def summary(rows: Sequence[dict[str, Any]], skipped: dict[tuple[str, str], list[str]]) -> str:
    """Per model: its pictures, the locality of its first and last block, opposite-phase pairs in block 1,
    the kinds skipped (`skipped`: (model, weights) -> kinds; their reasons were printed as they happened)."""
    frame = pd.DataFrame(rows, columns=["model", "weights", "kind", "block", "units", "locality",
                                        "locality_uniform", "opposite_pairs"])
    lines = []
    for (model, weights), part in frame.groupby(["model", "weights"], sort=False):
        pictures = part[part["kind"] != "locality"]
        depth = part[part["kind"] == "locality"].sort_values("block")
        counts = pictures["kind"].value_counts(sort=False)
        entry = {"model": model, "weights": weights,
                 "pictures": ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in counts.items())}
        if len(depth):
            entry["locality, block 1 → last (uniform)"] = (
                f"{depth['locality'].iloc[0]:.2f} → {depth['locality'].iloc[-1]:.2f} "
                f"({depth['locality_uniform'].iloc[0]:.2f})")
        first = pictures[(pictures["kind"] == "token-mixing") & (pictures["block"] == 1)]
        if len(first):
            entry["opposite pairs, block 1"] = (f"{int(first['opposite_pairs'].iloc[0])} of "
                                                f"{int(first['units'].iloc[0]) // 2}")
        entry["skipped"] = ", ".join(skipped.get((model, weights), [])) or "–"
        lines.append(entry)
    drawn = set(zip(frame["model"], frame["weights"]))
    lines.extend({"model": model, "weights": weights, "pictures": "none", "skipped": ", ".join(kinds)}
                 for (model, weights), kinds in skipped.items() if (model, weights) not in drawn)
    if not lines:
        return "no pictures"
    return pd.DataFrame(lines).fillna("–").to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    manifest = args.out / INSPECT_MANIFEST
    try:
        specs = resolve_models(args.models)
        weights = parse_weights(args.weights)
        check_pretrained(specs, weights)
        ensure_writable(manifest)
    except (UnknownModelError, WeightsError, ResultsError) as exc:
        fail(PROG, str(exc))
    env = environment("cpu")
    all_rows: list[dict[str, Any]] = []
    skipped: dict[tuple[str, str], list[str]] = {}
    for spec in tqdm(specs, desc="inspecting", unit="model", file=sys.stderr, disable=args.no_progress):
        try:
            model = load_model(spec, weights)
        except WeightsError as exc:
            fail(PROG, str(exc))
        kinds, reasons = plan(model, args.kinds)
        skipped[spec.name, weights.tag(spec)] = list(reasons)
        for line in reasons.values():
            tqdm.write(f"{spec.name}: {line}", file=sys.stderr)
        if not kinds:
            continue
        pictures, depth = pictures_of(model, spec.name, kinds, args.blocks, args.max_units)
        try:
            rows = [{**row, **env} for row in write_model(spec, weights, pictures, depth, args.out)]
            append_rows(manifest, rows, "inspect")
        except ResultsError as exc:
            fail(PROG, str(exc))
        except OSError as exc:
            fail(PROG, f"{exc.filename or args.out}: cannot write ({exc.strerror})")
        all_rows.extend(rows)
    print(summary(all_rows, skipped))
    print(f"\n{len(all_rows)} row(s) appended to {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
