"""`python -m suite.flops`: parameters and multiply-accumulates of the lineup -> results/flops.csv.

Counts are exact and device-independent: models are built on the meta device (no weights are
initialised), MACs come from fvcore with the handlers it lacks and are cross-checked against
torch's FlopCounterMode; any disagreement is printed and recorded.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from tqdm import tqdm

from suite.cli import (ArgumentParser, HelpFormatter, UsageError, add_models_argument, error_line, fail,
                       out_help, output_file, positive_int_list)
from suite.counting import count_row, summarize_disagreements
from suite.launch import add_launcher_arguments, check_launcher_arguments, launch, report_launch
from suite.results import (SUPERSEDE_KEYS, ResultsError, append_rows, done_rows, ensure_writable, environment,
                           part_path, row_key)
from suite.zoo import MIXER_RULES, UnknownModelError, mixer_rule_used, resolve_models

PROG = "python -m suite.flops"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Count parameters (total, without head, by part) and MACs per image of each model,\n"
                    "write one row per model and resolution, and print a table.\n"
                    "MACs count matmuls and convolutions only (attention included); GFLOPs = 2 x GMACs.",
        epilog="examples:\n  python -m suite.flops --models all\n"
               "  python -m suite.flops --models mixer --img-size 224,448\n"
               "  python -m suite.flops --models 'ViT-*/16,convnext_tiny' --out /tmp/counts",
    )
    add_models_argument(parser)
    parser.add_argument("--img-size", type=positive_int_list, default=None,
                        help="comma-separated input sides in pixels (default: each model's native size)")
    parser.add_argument("--mixer-rule", choices=MIXER_RULES, default="paper",
                        help="Mixer above its native size: 'paper' grows the token-mixing width D_S with the "
                             "number of patches (Appendix C); 'fixed' keeps it, as timm does")
    parser.add_argument("--num-classes", type=positive_int_list, default=[1000],
                        help="classifier outputs (one value) used for total parameters and MACs")
    parser.add_argument("--no-cross-check", dest="cross_check", action="store_false",
                        help="skip the FlopCounterMode cross-check")
    parser.add_argument("--out", default="results/flops.csv", help=out_help("flops.csv", "results file (rows are appended)"))
    parser.add_argument("--resume", action="store_true",
                        help="count only what --out (and its part files) lacks: (model, image size, mixer rule, classes)")
    add_launcher_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        check_launcher_arguments(args)
        specs = resolve_models(args.models)
    except (UnknownModelError, UsageError) as exc:
        fail(PROG, str(exc))
    if len(args.num_classes) != 1:
        fail(PROG, "--num-classes takes one value")
    out = output_file(args.out, "flops.csv")
    try:
        ensure_writable(out)
        done = done_rows(out, SUPERSEDE_KEYS["flops"]) if args.resume else {}
    except ResultsError as exc:
        fail(PROG, str(exc))
    if args.launcher != "none":
        names = [spec.name for spec in specs]
        return report_launch(launch(args, "suite.flops", argv, names, out), names, out)
    env = environment("cpu")
    jobs = [(spec, size) for spec in specs for size in (args.img_size or [spec.img_size])
            if row_key({"model": spec.name, "img_size": size, "mixer_rule": mixer_rule_used(spec, size, args.mixer_rule),
                        "num_classes": args.num_classes[0]}, SUPERSEDE_KEYS["flops"]) not in done]
    target = part_path(out, args.part) if args.part else out
    rows = []
    for spec, size in tqdm(jobs, desc="counting", unit="model", file=sys.stderr):
        try:
            row = count_row(spec, size, args.mixer_rule, args.cross_check, args.num_classes[0])
        except (ValueError, AssertionError, RuntimeError) as exc:
            tqdm.write(f"{PROG}: skipped {spec.name} at {size}: {error_line(exc)}", file=sys.stderr)
            continue
        row = {**row, **env}
        rows.append(row)
        try:
            append_rows(target, [row], "flops")
        except ResultsError as exc:
            fail(PROG, str(exc))
    if not rows and not done:
        fail(PROG, "nothing was counted")
    if not rows:
        print(f"nothing left to count: {out} has every row asked for")
        return 0
    print(summary(rows))
    for line in summarize_disagreements(rows):
        print(f"cross-check: {line}")
    print(f"\nwrote {len(rows)} row(s) to {target}")
    return 0


def summary(rows: list[dict]) -> str:
    """The table a user reads: parameters in millions, GMACs, and how the count was cross-checked."""
    frame = pd.DataFrame(rows)
    table = pd.DataFrame({
        "model": frame["model"],
        "family": frame["family"],
        "img": frame["img_size"],
        "params (M)": (frame["params"] / 1e6).round(2),
        "no head (M)": (frame["params_no_head"] / 1e6).round(2),
        "GMACs": frame["gmacs"].round(3),
        "plain fvcore": frame["fvcore_plain_rel_diff"].map(lambda v: f"{v:+.1%}"),
        "torch counter": frame["flop_counter_rel_diff"].map(
            lambda v: "agrees" if v == 0 else ("" if v == "" else f"{v:+.2%}")),
    })
    return table.to_string(index=False)


if __name__ == "__main__":
    raise SystemExit(main())
