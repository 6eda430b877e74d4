"""`python -m suite.merge FILE`: fold a results file's part files into it, in the suite's schema.

Jobs that cannot trust file locks (Slurm jobs on NFS) write part files beside the main file
(`throughput.part-<job>.csv`); every reader already takes the main file and its parts as one
table, so merging is never needed to read results, only to tidy a folder. Merging takes the file's
lock, reads the main file and its parts as one table (exact duplicates dropped), rewrites the main
file atomically with the suite's header for that harness, and removes the parts. The same command
converts a file written by an older suite (a different column order or fewer columns) to the
current schema, so that appends to it are accepted again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from suite.cli import ArgumentParser, HelpFormatter, fail
from suite.results import COLUMNS, ResultsError, part_files, rewrite_as_schema

PROG = "python -m suite.merge"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, formatter_class=HelpFormatter, description=__doc__.split("\n", 1)[1].strip())
    parser.add_argument("files", nargs="+", type=Path, help="results files (their parts are found beside them)")
    parser.add_argument("--kind", choices=tuple(COLUMNS), default=None,
                        help="which harness wrote them (default: from the file name, e.g. throughput.csv)")
    args = parser.parse_args(argv)
    for path in args.files:
        kind = args.kind or path.stem
        if kind not in COLUMNS:
            fail(PROG, f"{path}: cannot tell which harness wrote it; pass --kind {'|'.join(COLUMNS)}")
        if not path.exists() and not part_files(path):
            fail(PROG, f"{path}: no such results file and no part files beside it")
    for path in args.files:
        parts = len(part_files(path))
        try:
            rows = rewrite_as_schema(path, args.kind or path.stem)
        except ResultsError as exc:
            fail(PROG, str(exc))
        print(f"{path}: {rows} row(s), {parts} part file(s) folded in", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
