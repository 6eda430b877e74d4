"""`python -m suite.fewshot`: linear few-shot accuracy of frozen features -> results/fewshot.csv.

For each model, dataset, seed and shot count: k training images per class are drawn, the
model's pre-logits features computed (or read from the cache), and the l2-regularized
least-squares probe (suite.probe) fitted and scored on the whole test split. Two l2 rules:
`fixed` uses the reference's 2^10 so numbers compare with published ones; `heldout` picks from
2^-10..2^19 on a split carved from the k training shots (never the test set) and refits on all k.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from suite import probe
from suite.cli import (ArgumentParser, HelpFormatter, UsageError, fail, non_negative_int_list, out_help, output_file,
                       positive_float, positive_int, positive_int_list, resolve_device)
from suite.data import DataError, Dataset, check_shots, load_dataset, parse_datasets
from suite.features import FeatureSource, Ranks, Weights, WeightsError, default_cache_dir, parse_weights
from suite.launch import add_launcher_arguments, check_launcher_arguments, launch, report_launch
from suite.results import ResultsError, append_rows, done_rows, ensure_writable, environment, part_path, row_key
from suite.zoo import REGISTRY, ModelSpec, UnknownModelError, resolve_models

PROG = "python -m suite.fewshot"
L2_RULES = ("fixed", "heldout")
DEFAULT_DATASETS = "cifar10,cifar100,pets,flowers102"


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------

def class_permutations(labels: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """One generator per seed; in class order, a permutation of that class's example indices.

    Taking the first k of each permutation gives the k-shot set, so smaller shot sets are nested in
    larger ones and every seed reproduces exactly (the reference's sampling).
    """
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def take_shots(permutations: Sequence[np.ndarray], shots: int, skip: set[int] | frozenset[int] = frozenset(),
               ) -> list[np.ndarray]:
    """The first `shots` indices of each class's permutation, passing over unreadable ones."""
    chosen = []
    for c, order in enumerate(permutations):
        kept = order[[int(i) not in skip for i in order]] if skip else order
        if len(kept) < shots:
            raise DataError(f"class {c} has only {len(kept)} readable training images, {shots} shots asked; "
                            f"lower --shots")
        chosen.append(kept[:shots])
    return chosen


def heldout_size(shots: int) -> int:
    """Shots per class held out to choose l2 (a fifth, at least one); 0 when k < 2 leaves none to fit."""
    return 0 if shots < 2 else max(1, shots // 5)


# --------------------------------------------------------------------------------------------------
# One model on one dataset
# --------------------------------------------------------------------------------------------------

def evaluate(source: FeatureSource, dataset: Dataset, shots: Sequence[int], seeds: Sequence[int],
             rules: Sequence[str], fixed_l2: float, device: torch.device) -> list[dict[str, Any]]:
    """Rows (without environment) for every seed x shots x rule of one model on one dataset."""
    train, test = dataset.train, dataset.test
    test_store = source.store(test)
    source.ensure(test_store, test, range(len(test)))
    test_idx = [i for i in range(len(test)) if i in test_store.features]
    if not test_idx:
        raise DataError(f"no readable test image in {dataset.name} {test.split}")
    test_x = torch.from_numpy(test_store.matrix(test_idx)).to(device)
    test_y = torch.from_numpy(test.labels[test_idx]).to(device)

    train_store = source.store(train)
    permutations = {seed: class_permutations(train.labels, dataset.num_classes, seed) for seed in seeds}
    while True:
        needed = sorted({int(i) for seed in seeds
                         for part in take_shots(permutations[seed], max(shots), train_store.unreadable) for i in part})
        if not train_store.missing(needed):
            break
        source.ensure(train_store, train, needed)
    if source.ranks.rank != 0:
        return []  # under torchrun the features are every rank's work, the probe rank 0's

    rows = []
    for seed in seeds:
        for k in shots:
            per_class = take_shots(permutations[seed], k, train_store.unreadable)
            idx = np.concatenate(per_class)
            train_x = torch.from_numpy(train_store.matrix(idx)).to(device)
            train_y = torch.from_numpy(train.labels[idx]).to(device)
            solution = probe.fit(train_x, train_y, dataset.num_classes)
            chosen: dict[str, Any] = {}
            if "heldout" in rules and heldout_size(k):
                chosen = _choose_heldout(train_store, train, per_class, heldout_size(k), dataset.num_classes, device)
            wanted = [fixed_l2] + ([chosen["l2"]] if chosen else [])
            accuracy = solution.accuracy(test_x, test_y, wanted)
            base = {
                "dataset": dataset.name, "shots": k, "seed": seed, "n_train": len(idx), "n_test": len(test_idx),
                "n_classes": dataset.num_classes, "feature_dim": int(train_x.shape[1]), "probe_form": solution.form,
                "probe_dtype": "float64", "std_epsilon": probe.STD_EPSILON, "bias_value": probe.BIAS_VALUE,
                "unreadable_train": len(train_store.unreadable), "unreadable_test": len(test) - len(test_idx),
                "train_split": train.split, "test_split": test.split,
            }
            if "fixed" in rules:
                rows.append({**base, "l2": fixed_l2, "l2_rule": "fixed", "accuracy": accuracy[fixed_l2]})
            if chosen:
                rows.append({**base, "l2": chosen["l2"], "l2_rule": "heldout", "accuracy": accuracy[chosen["l2"]],
                             "heldout_accuracy": chosen["accuracy"], "n_heldout": chosen["n_heldout"],
                             "l2_grid": "2^-10..2^19"})
    return rows


def _choose_heldout(store: Any, train: Any, per_class: list[np.ndarray], held: int, num_classes: int,
                    device: torch.device) -> dict[str, Any]:
    fit_idx = np.concatenate([p[:-held] for p in per_class])
    val_idx = np.concatenate([p[-held:] for p in per_class])

    def tensors(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(store.matrix(idx)).to(device), torch.from_numpy(train.labels[idx]).to(device))

    l2, scores = probe.choose_l2_heldout(*tensors(fit_idx), *tensors(val_idx), probe.L2_GRID,
                                         num_classes=num_classes)
    return {"l2": l2, "accuracy": scores[l2], "n_heldout": len(val_idx)}


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def rule_list(text: str) -> list[str]:
    rules = [r.strip() for r in text.split(",") if r.strip()]
    if not rules or any(r not in L2_RULES for r in rules):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(L2_RULES)}, got {text!r}")
    return rules


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description=__doc__.split("\n", 1)[1].strip() + "\n\nExample (offline, no download):\n"
        "  python -m suite.fewshot --models resnet18 --weights random --datasets digits --shots 1,5,10",
    )
    parser.add_argument("--models", default="pretrained",
                        help="'pretrained' (the lineup's models that have timm pretrained weights), 'all', a group "
                        "(mixer, vit, bit, hybrid, context), a family (mlp, attention, conv), paper names "
                        "('Mixer-B/16'), globs ('ViT-*/16') or timm model names, comma-separated")
    parser.add_argument("--datasets", default=DEFAULT_DATASETS,
                        help="comma-separated: digits (embedded, no download), cifar10, cifar100, pets, flowers102, "
                        "imagenet, imagefolder (= --data-dir) or imagefolder:PATH (PATH/train and PATH/test or val)")
    parser.add_argument("--shots", type=positive_int_list, default="1,5,10,25", help="images per class")
    parser.add_argument("--seeds", type=non_negative_int_list, default="0,1,2", help="one sampling of the shots per seed")
    parser.add_argument("--weights", default="pretrained",
                        help="'pretrained' (the zoo's timm tag), 'random' (seeded init) or a checkpoint PATH "
                        "(.pth/.pt/.safetensors; a state_dict, or one under 'state_dict' or 'model')")
    parser.add_argument("--l2-rules", type=rule_list, default=",".join(L2_RULES),
                        help="fixed: the reference's l2; heldout: best of 2^-10..2^19 on a split of the shots")
    parser.add_argument("--l2", type=positive_float, default=probe.FIXED_L2, help="l2 of the fixed rule")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="data-loading worker processes (0: in the main process)")
    parser.add_argument("--data-dir", default="data", help="where datasets live or are downloaded")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()), help="feature cache folder")
    parser.add_argument("--out", default="results/fewshot.csv", help=out_help("fewshot.csv", "results file (rows are appended)"))
    parser.add_argument("--resume", action="store_true",
                        help="skip (model, weights, dataset, shots, seed, l2 rule) rows already in --out and its parts")
    add_launcher_arguments(parser)
    return parser


def default_models() -> list[ModelSpec]:
    """The lineup's models that have pretrained weights in timm."""
    return [spec for spec in REGISTRY.values() if spec.pretrained_tag]


def summary(rows: list[dict[str, Any]]) -> str:
    """Model x (dataset, shots, rule): accuracy in percent, mean ± std over seeds."""
    if not rows:
        return "no results"
    frame = pd.DataFrame(rows)
    stats = frame.groupby(["model", "dataset", "shots", "l2_rule"], sort=False)["accuracy"].agg(["mean", "std", "count"])
    cells = stats.apply(lambda r: f"{100 * r['mean']:.1f} ± {100 * (r['std'] if r['count'] > 1 else 0):.1f}", axis=1)
    table = cells.reset_index(name="acc")
    table["column"] = table["dataset"] + " " + table["shots"].astype(str) + "-shot " + table["l2_rule"]
    wide = table.pivot(index="model", columns="column", values="acc")
    wide = wide[list(dict.fromkeys(table["column"]))]
    seeds = int(frame["seed"].nunique())
    return f"few-shot accuracy %, mean ± std over {seeds} seed(s)\n" + wide.to_string()


#: What identifies a few-shot row for --resume.
RESUME_KEY = ("model", "weights", "dataset", "shots", "seed", "l2_rule")


def expected_rows(shots: Sequence[int], seeds: Sequence[int], rules: Sequence[str]) -> list[tuple[int, int, str]]:
    """The (shots, seed, rule) rows a run makes: no held-out row where k < 2 leaves nothing to hold out."""
    return [(k, seed, rule) for seed in seeds for k in shots for rule in rules
            if rule == "fixed" or heldout_size(k)]


def start_ranks(device_text: str) -> tuple[Ranks, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs) and take
    this rank's GPU; otherwise a single rank on the asked device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_text)
    if world == 1:
        return Ranks(), device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks.current(), device


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        check_launcher_arguments(args)
        specs = default_models() if args.models == "pretrained" else resolve_models(args.models)
        out = output_file(args.out, "fewshot.csv")
        ensure_writable(out)
        if args.launcher != "none":
            names = [spec.name for spec in specs]
            return report_launch(launch(args, "suite.fewshot", argv, names, out), names, out)
        weights: Weights = parse_weights(args.weights)
        ranks, device = start_ranks(args.device)
        datasets = [load_dataset(name, args.data_dir) for name in parse_datasets(args.datasets)]
        for dataset in datasets:
            check_shots(dataset, args.shots)
        done = done_rows(out, RESUME_KEY) if args.resume else {}
        target = part_path(out, args.part) if args.part else out
        env = environment(device)
        all_rows: list[dict[str, Any]] = []
        skipped = 0
        for spec in specs:
            source = FeatureSource(spec, weights, Path(args.cache_dir), device=device, batch_size=args.batch_size,
                                   workers=max(0, args.workers), ranks=ranks)
            model_columns = {"model": spec.name, "family": spec.family, "group": spec.group,
                             "timm_name": spec.timm_name or "", "weights": weights.tag(spec),
                             "weights_sha256": weights.sha256, "img_size": source.img_size,
                             "batch_size": args.batch_size, "feature_precision": "float32", "feature_tf32": False,
                             "world_size": ranks.world}
            for dataset in datasets:
                missing = [(k, seed, rule) for k, seed, rule in expected_rows(args.shots, args.seeds, args.l2_rules)
                           if row_key({"model": spec.name, "weights": weights.tag(spec), "dataset": dataset.name,
                                       "shots": k, "seed": seed, "l2_rule": rule}, RESUME_KEY) not in done]
                skipped += len(expected_rows(args.shots, args.seeds, args.l2_rules)) - len(missing)
                if not missing:
                    continue
                wanted = set(missing)
                rows = [{**model_columns, **row, **env}
                        for row in evaluate(source, dataset, sorted({k for k, _, _ in missing}),
                                            sorted({seed for _, seed, _ in missing}), args.l2_rules, args.l2, device)
                        if (row["shots"], row["seed"], row["l2_rule"]) in wanted]
                if ranks.rank == 0:
                    append_rows(target, rows, "fewshot")
                all_rows.extend(rows)
                if rows and rows[0]["unreadable_train"] + rows[0]["unreadable_test"]:
                    print(f"{spec.name} {dataset.name}: skipped unreadable images (train {rows[0]['unreadable_train']}"
                          f" seen among the sampled ones, test {rows[0]['unreadable_test']})", file=sys.stderr)
    except (DataError, WeightsError, UnknownModelError, ResultsError, UsageError) as exc:
        fail(PROG, str(exc))
    if ranks.rank != 0:
        return 0
    print(summary(all_rows))
    print(f"{len(all_rows)} rows appended to {target}" + (f", {skipped} already there" if skipped else "")
          + (f"; features from {ranks.world} processes" if ranks.world > 1 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
