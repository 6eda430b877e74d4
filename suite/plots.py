"""The report's figures, drawn with matplotlib in the paper's colours.

Every function takes a tidy DataFrame and returns a `matplotlib.figure.Figure` built without
pyplot (no global figure registry, so a long report leaks nothing). Families keep one colour and
one marker everywhere, as in the paper: Mixer (mlp) pink, attention blue, convolution yellow, and
hybrids their own teal. Markers differ too, so the figures survive grey-scale printing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from suite.pareto import Sense, pareto_mask  # noqa: E402
from suite.results import write_atomic  # noqa: E402

#: family -> (colour, marker, legend label); the one palette of the suite.
FAMILY_STYLE: dict[str, tuple[str, str, str]] = {
    "mlp": ("#e0529c", "o", "MLP (Mixer)"),
    "attention": ("#2f6fd0", "s", "Attention"),
    "conv": ("#e3a600", "^", "Convolution"),
    "hybrid": ("#16a085", "D", "Hybrid (conv stem)"),
}
#: Style for a family the palette does not know (a raw timm model, say).
OTHER_STYLE = ("#7f7f7f", "v", "Other")

#: Matplotlib settings of every figure: SVG text stays text (small, selectable, searchable).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "pdf.fonttype": 42,
}


def family_style(family: str) -> tuple[str, str, str]:
    """(colour, marker, label) of a family."""
    return FAMILY_STYLE.get(str(family), OTHER_STYLE)


#: The id prefix of an artist whose SVG group gets a hover title (made unique per figure on save).
_HOVER_ID = "suite-hover-"


def _hover(fig: Figure, artist: Any, text: str) -> None:
    """Give `artist` a tooltip: an SVG <title> inside its group, which browsers show on hover (no script)."""
    titles = fig.__dict__.setdefault("_suite_titles", {})
    gid = f"{_HOVER_ID}{len(titles)}"
    artist.set_gid(gid)
    titles[gid] = text


def _number(value: float) -> str:
    return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def _new_figure(width: float = 6.4, height: float = 4.2, panels: int = 1) -> tuple[Figure, list]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0].tolist()
    return fig, axes


def _family_legend(ax, families: Sequence[str], extra: Sequence[Line2D] = (), **kwargs) -> None:
    handles = []
    for family in sorted(set(families), key=lambda f: list(FAMILY_STYLE).index(f) if f in FAMILY_STYLE else 99):
        colour, marker, label = family_style(family)
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle="none", markersize=6, label=label,
                              markeredgecolor="white", markeredgewidth=0.5))
    ax.legend(handles=handles + list(extra), **kwargs)


def _thousands(value: float, _pos: int) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _log_axis(axis) -> None:
    """Log scale ticks at 1, 2, 5 per decade, written 200, 1k, 20k; no 4x10^2 minor labels.

    On an axis spanning less than a factor of 3 (one or no 1-2-5 tick inside), the minor ticks
    (3, 4, 6, 7, 8, 9 per decade) are labelled too, so the axis can still be read.
    """
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_thousands))

    def minor(value: float, _pos: int) -> str:
        low, high = sorted(axis.get_view_interval())
        return _thousands(value, _pos) if low > 0 and high / low < 3 else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _percent_axis(axis) -> None:
    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{round(v * 100, 1):g}%"))


def throughput_vs_batch(frame: pd.DataFrame, title: str = "") -> Figure:
    """Images/sec against batch size, one panel per family and one line per model, each panel with
    a legend of its own (columns model, family, batch_size, images_per_sec). A whole lineup on one
    set of axes has a legend of thirty entries that nobody can match to thirty lines."""
    families = sorted(frame["family"].astype(str).unique(),
                      key=lambda f: list(FAMILY_STYLE).index(f) if f in FAMILY_STYLE else 99)
    shades = ("-", "--", "-.", ":")
    with matplotlib.rc_context(STYLE):
        columns = min(2, len(families)) or 1
        rows_of_panels = -(-len(families) // columns) or 1
        fig = Figure(figsize=(6.4 if columns == 1 else 10.0, 3.3 * rows_of_panels + 0.3), layout="constrained")
        grid = fig.subplots(rows_of_panels, columns, squeeze=False, sharey=True)
        axes = [ax for row in grid for ax in row]
        for ax in axes[len(families):]:
            ax.set_visible(False)
        for ax, family in zip(axes, families):
            part = frame[frame["family"].astype(str) == family]
            colour, marker, family_label = family_style(family)
            order = part.groupby("model")["images_per_sec"].max().sort_values(ascending=False).index
            for index, name in enumerate(order):
                rows = part[part["model"] == name].sort_values("batch_size")
                (line,) = ax.plot(rows["batch_size"], rows["images_per_sec"], color=colour, marker=marker,
                                  markersize=4, linewidth=1.2, alpha=0.55 + 0.45 * (index % 2),
                                  linestyle=shades[(index // 2) % len(shades)], label=str(name),
                                  markeredgecolor="white", markeredgewidth=0.4)
                for b, ips in zip(rows["batch_size"], rows["images_per_sec"]):
                    dot = ax.scatter([b], [ips], s=16, color=colour, alpha=0.0, zorder=4)
                    _hover(fig, dot, f"{name}: {_number(ips)} images/s at batch {int(b)}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            _log_axis(ax.yaxis)
            ax.set_title(family_label, loc="left")
            ax.set_xlabel("batch size")
            ax.set_ylabel("images / sec")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, handlelength=2.2, borderaxespad=0)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return fig


def scaling(frame: pd.DataFrame, y: str, y_label: str, title: str = "") -> Figure:
    """`y` against image side, log-log, one line per curve (columns curve, family, img_size, y), to read
    how cost grows with resolution: Mixer under both token-mixing rules, ViT, BiT."""
    styles = ("-", "--", "-.", ":")
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new_figure(6.4, 4.2)
        for index, (curve, rows) in enumerate(frame.dropna(subset=[y]).groupby("curve", sort=False)):
            rows = rows.sort_values("img_size")
            colour, marker, _ = family_style(rows["family"].iloc[0])
            ax.plot(rows["img_size"], rows[y], color=colour, marker=marker, markersize=4, linewidth=1.3,
                    linestyle=styles[index % len(styles)], label=str(curve), markeredgecolor="white",
                    markeredgewidth=0.4)
            for side, value in zip(rows["img_size"], rows[y]):
                dot = ax.scatter([side], [value], s=16, color=colour, alpha=0.0, zorder=4)
                _hover(fig, dot, f"{curve} at {int(side)} px: {y_label} {_number(value)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        _log_axis(ax.yaxis)
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel(y_label)
        if title:
            ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, handlelength=2.2, borderaxespad=0)
    return fig


def scatter_frontier(frame: pd.DataFrame, x: str, y: str, *, x_label: str, y_label: str,
                     x_sense: Sense | None = "max", y_sense: Sense | None = "max", log_x: bool = True,
                     log_y: bool = False, percent_y: bool = False, panel: str | None = None,
                     title: str = "", label: str = "label", size: tuple[float, float] | None = None) -> Figure:
    """One point per row coloured by family, labelled, with the Pareto frontier dashed.

    With `panel`, one subplot per value of that column (e.g. one per dataset), each with its own
    frontier. `x_sense=None` draws no frontier. `size` is (width, height) in inches.
    """
    groups = [(None, frame)] if panel is None else list(frame.groupby(panel, sort=True))
    with matplotlib.rc_context(STYLE):
        width = 6.4 if len(groups) == 1 else min(4.0 * len(groups), 13.0)
        fig, axes = _new_figure(*(size or (width, 4.4)), panels=len(groups))
        jobs = []
        for ax, (key, rows) in zip(axes, groups):
            jobs.append(_scatter_panel(ax, rows, x, y, x_sense, y_sense, label, x_label, y_label, percent_y))
            ax.set_xlabel(x_label)
            if log_x:
                ax.set_xscale("log")
                _log_axis(ax.xaxis)
            if log_y:
                ax.set_yscale("log")
                _log_axis(ax.yaxis)
            if percent_y:
                _percent_axis(ax.yaxis)
            if key is not None:
                ax.set_title(str(key), loc="left")
        axes[0].set_ylabel(y_label)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        _label_points(fig, jobs)
        extra = []
        if x_sense is not None and y_sense is not None:
            extra.append(Line2D([], [], color="#444444", linestyle="--", linewidth=1.0, label="Pareto frontier"))
        _family_legend(axes[-1], frame["family"].tolist(), extra, loc="best")
    return fig


def _scatter_panel(ax, rows: pd.DataFrame, x: str, y: str, x_sense: Sense | None, y_sense: Sense | None,
                   label: str, x_label: str = "", y_label: str = "", percent_y: bool = False) -> None:
    rows = rows.dropna(subset=[x, y])
    fig = ax.get_figure()
    for _, row in rows.iterrows():
        colour, marker, _ = family_style(row["family"])
        point = ax.scatter([row[x]], [row[y]], color=colour, marker=marker, s=42, edgecolor="white", linewidth=0.6,
                           zorder=3)
        shown_y = f"{100 * row[y]:.1f}%" if percent_y else _number(row[y])
        _hover(fig, point, f"{row[label]}: {x_label or x} {_number(row[x])}, {y_label or y} {shown_y}")
    if x_sense is not None and y_sense is not None and len(rows):
        mask = pareto_mask(rows[x], rows[y], x_sense=x_sense, y_sense=y_sense)
        front = rows[mask].sort_values(x)
        ax.plot(front[x], front[y], linestyle="--", color="#444444", linewidth=1.0, zorder=2)
    if len(rows):
        ax.margins(x=0.12, y=0.1)
    return ax, rows[x].to_numpy(float), rows[y].to_numpy(float), rows[label].astype(str).tolist()


#: Where a label may sit around its point (offset in points, alignment), in order of preference.
#: The second ring sits farther out and gets a thin leader line back to its point.
_LABEL_SPOTS = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                (-4, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
                (10, 0, "left", "center"), (-10, 0, "right", "center"),
                (14, 12, "left", "bottom"), (14, -12, "left", "top"), (-14, 12, "right", "bottom"),
                (-14, -12, "right", "top"), (0, 18, "center", "bottom"), (0, -18, "center", "top"),
                (24, 0, "left", "center"), (-24, 0, "right", "center"))
_LEADER = {"arrowstyle": "-", "color": "#aaaaaa", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3}


def _label_points(fig: Figure, jobs: Sequence[tuple]) -> None:
    """Name every point, choosing for each label the first spot that overlaps no other label or point.

    Greedy and cheap (16 candidate spots per label), which is enough for the few dozen models of a
    report. A label that fits nowhere is left out (an overlapped label is unreadable anyway) and the
    axes say how many were.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for ax, xs, ys, labels in jobs:
        points = ax.transData.transform(np.column_stack([xs, ys])) if len(xs) else np.empty((0, 2))
        frame = ax.get_window_extent(renderer)
        placed = []
        omitted = 0
        for i, text in enumerate(labels):
            others = np.delete(points, i, axis=0)
            chosen = None
            for dx, dy, ha, va in _LABEL_SPOTS:
                far = abs(dx) + abs(dy) > 14
                note = ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                                   va=va, fontsize=7.5, color="#333333", zorder=4,
                                   arrowprops=_LEADER if far else None)
                box = note.get_window_extent(renderer).expanded(1.05, 1.1)
                clash = (any(box.overlaps(b) for b in placed)
                         or any(box.contains(px, py) for px, py in others)
                         or box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1)
                if not clash:
                    chosen = (note, box)
                    break
                note.remove()
            if chosen is None:
                omitted += 1
                continue
            placed.append(chosen[1])
        if omitted:
            ax.text(0.99, 0.01, f"{omitted} label(s) left out where points crowd; see the tables",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5, color="#777777")


def ours_vs_paper(frame: pd.DataFrame, ours_label: str, title: str = "") -> Figure:
    """Our best images/sec against the paper's TPU-v3 images/sec/core, log-log, one point per model."""
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new_figure(6.0, 4.4)
        job = _scatter_panel(ax, frame, "paper", "ours", None, None, "label", "paper images/s/core", ours_label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        ax.set_xlabel("paper: images / sec / core (TPU-v3)")
        ax.set_ylabel(ours_label)
        if title:
            ax.set_title(title, loc="left")
        valid = frame[["paper", "ours"]].dropna()
        if len(valid) >= 2:
            # The least-squares line of log(ours) on log(paper): a slope of 1 means a constant ratio.
            slope, intercept = np.polyfit(np.log(valid["paper"]), np.log(valid["ours"]), 1)
            grid = np.geomspace(valid["paper"].min(), valid["paper"].max(), 20)
            ax.plot(grid, np.exp(intercept) * grid ** slope, color="#999999", linewidth=0.9, linestyle=":",
                    label=f"log-log fit, slope {slope:.2f}")
            extra = [Line2D([], [], color="#999999", linestyle=":", label=f"log-log fit, slope {slope:.2f}")]
        else:
            extra = []
        _label_points(fig, [job])
        _family_legend(ax, frame["family"].tolist(), extra, loc="best")
    return fig


def svg_document(fig: Figure, salt: str) -> str:
    """The figure as a standalone SVG file's text; `salt` makes its element ids unique to it. Every
    artist given a hover text gets an SVG <title> in its group: a browser shows it on hover."""
    buffer = io.StringIO()
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    document = buffer.getvalue()
    titles = fig.__dict__.get("_suite_titles", {})
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", salt)

    def titled(match: re.Match) -> str:
        gid = match.group(1)
        return f'<g id="{prefix}-{gid}"><title>{escape(titles.get(gid, ""))}</title>'

    return re.sub(rf'<g id="({_HOVER_ID}\d+)">', titled, document)


def inline_svg(document: str) -> str:
    """An SVG document as an `<svg>` element for an HTML page (no XML prologue).

    Its width and height (in points) stay, so every figure shows its text at the same size; the
    page's CSS lets it shrink to fit a narrow column (the viewBox keeps the aspect ratio).
    """
    return document[document.find("<svg"):]


def save_figure(fig: Figure, stem: Path, salt: str) -> tuple[str, list[Path]]:
    """Write `stem.pdf` and `stem.svg` (each through a temporary file and a rename).

    Returns the SVG document's text too, so the page can inline it without drawing the figure again.
    """
    document = svg_document(fig, salt)
    svg_path, pdf_path = stem.with_suffix(".svg"), stem.with_suffix(".pdf")
    write_atomic(svg_path, document)
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="pdf", metadata={"CreationDate": None})
    write_atomic(pdf_path, buffer.getvalue())
    return document, [pdf_path, svg_path]



def picture(image: np.ndarray, title: str = "", note: str = "", max_width: float = 7.0) -> Figure:
    """An image (H, W, 3 in [0, 1], or the pixels of a PNG) shown as it is: no axes, no resampling.

    For the pictures of `python -m suite.inspect` (unit grids, similarity maps); vector backends
    embed the pixels unresampled (interpolation 'none'), so the PDF and SVG keep every weight.
    """
    height, width = image.shape[:2]
    inches = min(max_width, max(2.5, width / 110))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(inches, inches * height / width + (0.45 if title else 0) + (0.5 if note else 0)),
                     layout="constrained")
        ax = fig.subplots()
        ax.imshow(image, interpolation="none")
        ax.set_axis_off()
        if title:
            ax.set_title(title, loc="left")
        if note:
            fig.text(0.01, 0.005, note, ha="left", va="bottom", fontsize=7, color="#555555", wrap=True)
    return fig


def locality_by_depth(frame: pd.DataFrame, title: str = "") -> Figure:
    """Spread of the token-mixing units against block, one line per (model, weights), in the family colours.

    Columns: label, family, block, locality, grid (e.g. '14×14') and locality_uniform; a dotted line
    marks the spread of uniform weights on each grid (the global end of the scale; 0 is one token).
    """
    styles = ("-", "--", "-.", ":")
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new_figure(6.4, 4.0)
        for index, (label, rows) in enumerate(frame.groupby("label", sort=False)):
            rows = rows.sort_values("block")
            colour, marker, _ = family_style(rows["family"].iloc[0])
            ax.plot(rows["block"], rows["locality"], color=colour, marker=marker, markersize=4, linewidth=1.3,
                    linestyle=styles[index % len(styles)], label=str(label), markeredgecolor="white",
                    markeredgewidth=0.4)
            for block, value in zip(rows["block"], rows["locality"]):
                dot = ax.scatter([block], [value], s=16, color=colour, alpha=0.0, zorder=4)
                _hover(fig, dot, f"{label}, block {int(block)}: spread {value:.2f} patches")
        for grid, value in frame.groupby("grid", sort=False)["locality_uniform"].first().items():
            ax.axhline(value, color="#999999", linewidth=0.9, linestyle=":", zorder=1)
            ax.annotate(f"uniform over {grid} tokens", (1, value), xycoords=("axes fraction", "data"),
                        xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7,
                        color="#777777")
        top = np.nanmax([frame["locality"].max(), frame["locality_uniform"].max()])
        ax.set_ylim(0, 1.12 * top if np.isfinite(top) and top > 0 else 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Mixer block")
        ax.set_ylabel("spread of token-mixing weights (patches)")
        if title:
            ax.set_title(title, loc="left")
        ax.legend(loc="lower right", fontsize=7)
    return fig
