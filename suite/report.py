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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from suite.cli import ArgumentParser, HelpFormatter, fail, out_help, output_file
from suite.report_learned import learned_sections
from suite.results import COMMANDS, ResultsError, load_results, write_atomic
from suite.sections import ENABLES, Section, build_sections
from suite.tables import Table, load_paper

PROG = "python -m suite.report"


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


def summary(report: dict[str, Any]) -> str:
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
    parser.add_argument("--out", default="reports/index.html", help=out_help("index.html", "HTML page"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.results.exists() and not args.results.is_dir():
        fail(PROG, f"{args.results}: not a folder (--results takes the folder holding the CSVs)")
    args.out = output_file(args.out, "index.html")
    if args.out.is_dir():
        fail(PROG, f"{args.out}: is a folder; --out takes the HTML page to write, or a folder for index.html")
    try:
        report = build_report(args.results, args.out, progress=not args.no_progress)
    except ResultsError as exc:
        fail(PROG, str(exc))
    except OSError as exc:
        fail(PROG, f"{exc.filename or args.out}: cannot write ({exc.strerror})")
    print(summary(report))
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
