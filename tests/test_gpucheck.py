"""Tests of `python -m suite.gpucheck` on the CPU: its plan of commands, the deadline, and the
comparison with timm's benchmark.py (a stand-in script that writes timm's CSV columns)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from suite import gpucheck


def test_the_plan_covers_what_the_issue_asks_for(tmp_path):
    steps = gpucheck.build_steps(tmp_path, "cuda", Path("benchmark.py"), gpucheck.STEP_NAMES,
                                 gpucheck.TIMM_MODELS, 256, "bf16", rounds=3)
    by_name = {}
    for step in steps:
        by_name.setdefault(step.name, []).append(step.text())
    assert "-m gpu" in by_name["tests"][0]
    assert gpucheck.SWEEP_MODELS in by_name["sweep"][0] and "--device cuda" in by_name["sweep"][0]
    assert "EfficientNet-L2" in by_name["effnet"][0] and "--model-budget 0" in by_name["effnet"][0]
    assert "--compile" in by_name["compile"][0] and "--cuda-graphs" in by_name["graphs"][0]
    comparisons = by_name["timm"]
    assert len(comparisons) == 2 * 3 * 3  # timm and ours, three models, three rounds
    first_round = comparisons[:2]
    second_round = comparisons[6:8]
    assert "benchmark.py" in first_round[0] and "suite.throughput" in first_round[1]
    assert "suite.throughput" in second_round[0] and "benchmark.py" in second_round[1]  # the order alternates
    assert all("--amp-dtype bfloat16" in c for c in comparisons if "benchmark.py" in c)
    assert sum(step.limit_s for step in steps if step.name != "timm") <= 8 * 60
    assert gpucheck.build_parser().parse_args([]).deadline <= 8 * 60  # and the whole check stops by then


def test_steps_that_do_not_fit_the_deadline_are_skipped(tmp_path):
    steps = [gpucheck.Step("a", [sys.executable, "-c", "pass"], 30, tmp_path / "a.log"),
             gpucheck.Step("b", [sys.executable, "-c", "import time; time.sleep(30)"], 30, tmp_path / "b.log"),
             gpucheck.Step("c", [sys.executable, "-c", "pass"], 30, tmp_path / "c.log")]
    gpucheck.run_steps(steps, deadline_s=3, echo=False, least_s=1)
    assert steps[0].status == "ok"
    assert steps[1].status.startswith("timed out")
    assert steps[2].status == "skipped (deadline)"


FAKE_TIMM = textwrap.dedent('''
    import argparse, csv
    parser = argparse.ArgumentParser()
    parser.add_argument("--model"); parser.add_argument("--results-file"); parser.add_argument("-b", type=int)
    args, _ = parser.parse_known_args()
    with open(args.results_file, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["model", "infer_samples_per_sec", "infer_batch_size"])
        writer.writeheader()
        writer.writerow({"model": args.model, "infer_samples_per_sec": 1000.0, "infer_batch_size": args.b})
''')


def test_the_comparison_with_timm_runs_both_and_gives_the_ratio(tmp_path, capsys):
    benchmark = tmp_path / "benchmark.py"
    benchmark.write_text(FAKE_TIMM)
    out = tmp_path / "check"
    (out / "timm").mkdir(parents=True)
    code = gpucheck.main(["--out", str(out), "--device", "cpu", "--only", "timm", "--timm-benchmark", str(benchmark),
                          "--timm-models", "test_vit", "--timm-batch", "2", "--timm-precision", "fp32",
                          "--rounds", "1"])
    assert code == 0
    comparison = pd.read_csv(out / "timm-comparison-infer.csv")
    row = comparison.iloc[0]
    assert row["model"] == "test_vit" and row["rounds"] == 1 and row["timm_img_s"] == 1000.0
    assert row["ours_over_timm"] == pytest.approx(row["ours_img_s"] / 1000.0)
    assert "ours_over_timm" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        gpucheck.main(["--only", "nonsense", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown step" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        gpucheck.main(["--timm-benchmark", str(tmp_path / "missing.py"), "--out", str(tmp_path)])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err
