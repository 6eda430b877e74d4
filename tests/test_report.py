"""The report: rendered from small results files the tests write, checked for content and integrity.

The numbers below are test data, made up to exercise the page (ties, flips, OOM rows, two devices);
they are written into pytest's tmp_path and are not measurements.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite import report, tables
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS

FAMILY = {"Mixer-B/16": "mlp", "Mixer-S/32": "mlp", "ViT-B/16": "attention", "BiT-R50x1": "conv",
          "R50+ViT-B/16": "hybrid", "Mixer-L/16": "mlp"}


def env(device: str = "cuda:0", name: str = "Test GPU A") -> dict:
    row = {c: "" for c in ENVIRONMENT_COLUMNS}
    row.update(device=device, device_name=name, torch_version="2.x-test", timm_version="1.x-test",
               python_version="3.x", cpu="test cpu", threads=2, hostname="testhost", suite_commit="abc123",
               date="2026-01-01T00:00:00+00:00")
    return row


def flops_rows(models=("Mixer-B/16", "Mixer-S/32", "ViT-B/16", "BiT-R50x1", "R50+ViT-B/16")) -> list[dict]:
    # Mixer-B/16's params_no_head (59.1 M) matches the paper's 59; Mixer-S/32 (21.0 M) does not match 19.
    values = {"Mixer-B/16": (59.9e6, 59.1e6, 12.6), "Mixer-S/32": (21.5e6, 21.0e6, 1.0),
              "ViT-B/16": (86.6e6, 85.8e6, 17.6), "BiT-R50x1": (25.5e6, 23.5e6, 4.1),
              "R50+ViT-B/16": (98.0e6, 97.2e6, 16.0)}
    rows = []
    for model in models:
        params, no_head, gmacs = values[model]
        rows.append({**env("meta", "meta"), "model": model, "group": "g", "family": FAMILY[model],
                     "timm_name": model.lower(), "img_size": 224, "mixer_rule": "native" if "Mixer" in model else "",
                     "num_classes": 1000, "params": params, "params_no_head": no_head, "params_stem": 1e5,
                     "params_blocks": no_head - 2e5, "params_head": params - no_head, "params_other": 1e5,
                     "macs": gmacs * 1e9, "gmacs": gmacs})
    return rows


def throughput_rows(device_name: str = "Test GPU A", precision: str = "bf16", vit_first: bool = True) -> list[dict]:
    # ViT-B/16 faster than Mixer-B/16 here: the reverse of the paper (a flip the report must list).
    speeds = {"Mixer-B/16": 900.0, "ViT-B/16": 1000.0 if vit_first else 700.0, "Mixer-S/32": 5000.0,
              "BiT-R50x1": 1500.0, "R50+ViT-B/16": 400.0}
    rows = []
    for model, speed in speeds.items():
        for batch, factor in ((8, 0.5), (32, 0.9), (128, 1.0)):
            rows.append({**env("cuda:0", device_name), "model": model, "group": "g", "family": FAMILY[model],
                         "timm_name": model.lower(), "img_size": 224, "batch_size": batch, "precision": precision,
                         "channels_last": False, "compile": False, "status": "ok",
                         "step_time_median_ms": batch / (speed * factor) * 1000, "step_time_p10_ms": 1.0,
                         "step_time_p90_ms": 2.0, "images_per_sec": speed * factor, "peak_memory_mb": 100 * batch,
                         "macs_per_image": 1e9, "achieved_tflops": 1.0, "peak_tflops": 100.0, "mfu": 0.01,
                         # Columns beyond the schema, which harnesses may add (and flops.csv also has).
                         "params": 1.0, "error": "", "precision_mode": "autocast"})
    rows.append({**rows[-1], "batch_size": 512, "status": "oom", "images_per_sec": "", "step_time_median_ms": ""})
    return rows


def fewshot_rows(models=("Mixer-B/16", "ViT-B/16", "BiT-R50x1")) -> list[dict]:
    accuracy = {"Mixer-B/16": 0.70, "ViT-B/16": 0.75, "BiT-R50x1": 0.60, "Mixer-S/32": 0.50}
    rows = []
    for model in models:
        for dataset in ("cifar10", "pets"):
            for seed in (0, 1):
                rows.append({**env("cpu", "test cpu"), "model": model, "family": FAMILY[model],
                             "weights": f"{model.lower()}.test", "dataset": dataset, "img_size": 224, "shots": 5,
                             "seed": seed, "l2": 1.0, "l2_rule": "fixed",
                             "accuracy": accuracy[model] + 0.02 * seed - (0.1 if dataset == "pets" else 0),
                             "n_train": 50, "n_test": 100, "feature_dim": 768, "gmacs": -1.0})
    return rows


def write(folder: Path, kind: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    assert set(SCHEMAS[kind]) <= set(frame.columns)
    path = folder / f"{kind}.csv"
    frame.to_csv(path, index=False)
    return path


def render(tmp_path: Path, name: str = "out") -> tuple[Path, str]:
    out = tmp_path / name / "index.html"
    assert report.main(["--results", str(tmp_path / "results"), "--out", str(out), "--no-progress"]) == 0
    return out, out.read_text(encoding="utf-8")


class Links(html.parser.HTMLParser):
    """Every src/href of a page, and the ids it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href", "xlink:href") and value is not None:
                self.refs.append(value)
            if key == "id" and value:
                self.ids.add(value)


def assert_no_broken_references(out: Path, text: str) -> None:
    parser = Links()
    parser.feed(text)
    assert parser.refs, "the page links its exports"
    for ref in parser.refs:
        if ref.startswith("#"):
            assert ref[1:] in parser.ids, f"anchor {ref} points nowhere"
        elif ref.startswith("data:"):
            continue
        else:
            assert not re.match(r"^[a-z]+://", ref), f"external reference {ref}"
            assert (out.parent / ref).is_file(), f"broken reference {ref}"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("full")
    results = tmp_path / "results"
    write(results, "flops", flops_rows())
    write(results, "throughput", throughput_rows() + throughput_rows("Test GPU B", "fp32", vit_first=False))
    write(results, "fewshot", fewshot_rows())
    out, text = render(tmp_path)
    return out, text


def test_full_report_has_every_table(full_report):
    out, text = full_report
    for slug in ("table1", "counting", "cost-test-gpu-a-bf16", "table3-test-gpu-a-bf16", "flips-test-gpu-a-bf16",
                 "cost-test-gpu-b-fp32", "table3-test-gpu-b-fp32", "fewshot-5shot-fixed",
                 "environment"):
        assert f'id="table-{slug}"' in text, slug
    assert "Partial results" not in text


def test_full_report_has_every_figure_inline(full_report):
    out, text = full_report
    figure_ids = re.findall(r'<figure id="figure-([^"]+)"', text)
    # GMACs/params; per device: ours-vs-paper, Figure 3 right with ours, batch, params, accuracy/throughput;
    # accuracy/GMACs; 2 paper figures.
    assert len(figure_ids) == 1 + 2 * 5 + 1 + 2
    assert text.count("<svg") == len(figure_ids)
    for slug in figure_ids:
        assert (out.parent / f"figure-{slug}.pdf").stat().st_size > 1000
        assert (out.parent / f"figure-{slug}.svg").read_text().lstrip().startswith("<?xml")


def test_one_section_per_device_and_precision(full_report):
    _, text = full_report
    assert "Throughput on Test GPU A (bf16)" in text
    assert "Throughput on Test GPU B (fp32)" in text


def test_exports_are_written_beside_the_page(full_report):
    out, _ = full_report
    cost = pd.read_csv(out.parent / "table-cost-test-gpu-a-bf16.csv")
    assert cost.loc[cost["Model"] == "Mixer-S/32", "Best images/s"].item() == pytest.approx(5000.0)
    assert cost.loc[cost["Model"] == "Mixer-S/32", "Batch"].item() == 128
    assert cost.loc[cost["Model"] == "ViT-B/16", "GMACs"].item() == pytest.approx(17.6)
    # flops.csv's count wins over the extra `params` column throughput.csv carries.
    assert cost.loc[cost["Model"] == "ViT-B/16", "Params (M)"].item() == pytest.approx(86.6)
    assert cost.loc[cost["Model"] == "ViT-B/16", "Settings"].item() == "autocast"
    tex = (out.parent / "table-cost-test-gpu-a-bf16.tex").read_text()
    assert "\\begin{tabular}{llrrrrrrlrr}" in tex and "Mixer-S/32" in tex and "MFU (\\%)" in tex


def test_no_broken_references(full_report):
    out, text = full_report
    assert_no_broken_references(out, text)


def test_table1_marks_the_count_that_differs_from_the_paper(full_report):
    out, text = full_report
    table = pd.read_csv(out.parent / "table-table1.csv")
    row = table.set_index("Model").loc["Mixer-S/32"]
    assert row["Params ours (M)"] == pytest.approx(21.0)
    assert row["Difference (M)"] == pytest.approx(2.0)
    section = text.split('id="table-table1"')[1].split("</table>")[0]
    marked_rows = [r for r in section.split("<tr>") if 'class="num diff"' in r]
    assert len(marked_rows) == 1 and "Mixer-S/32" in marked_rows[0]


def test_table3_lists_the_flip_and_the_rank_correlation(full_report):
    out, text = full_report
    flips = pd.read_csv(out.parent / "table-flips-test-gpu-a-bf16.csv")
    pairs = {(a, b) for a, b in zip(flips["Faster here"], flips["Slower here"])}
    assert ("ViT-B/16", "Mixer-B/16") in pairs
    assert "1,000 vs 900.0" in text and "861 vs 1,384" in text
    # On device B, ViT-B/16 (700/s) is behind Mixer-B/16 (900/s), as in the paper: no such flip.
    flips_b = out.parent / "table-flips-test-gpu-b-fp32.csv"
    if flips_b.exists():
        assert ("ViT-B/16", "Mixer-B/16") not in set(zip(*pd.read_csv(flips_b)[["Faster here", "Slower here"]].T.values))
    assert "Spearman" in text


def test_rank_agreement_counts_flips_and_correlation():
    both = pd.DataFrame({"model": ["a", "b", "c", "d"], "img_size": 224, "family": "mlp",
                         "ours": [4.0, 3.0, 2.0, 1.0], "paper": [40.0, 10.0, 30.0, 5.0]})
    result = tables.rank_agreement(both)
    assert result["n"] == 4
    assert result["rho"] == pytest.approx(0.8)
    assert [(r["faster here"], r["slower here"]) for _, r in result["flips"].iterrows()] == [("b", "c")]


def test_numbers_keep_the_digits_that_matter():
    assert [tables.rate(v) for v in (12345.6, 123.44, 0.1234, float("nan"))] == ["12,346", "123.4", "0.123", "–"]
    assert [tables.ratio(v) for v in (1.163, 0.0442, 7.88e-5)] == ["1.16", "0.0442", "1/12,700"]


def test_rank_agreement_needs_three_models():
    both = pd.DataFrame({"model": ["a", "b"], "img_size": 224, "family": "mlp", "ours": [2.0, 1.0],
                         "paper": [1.0, 2.0]})
    result = tables.rank_agreement(both)
    assert result["rho"] != result["rho"]  # NaN
    assert len(result["flips"]) == 1


def test_fewshot_table_has_mean_and_std_over_seeds(full_report):
    out, text = full_report
    table = pd.read_csv(out.parent / "table-fewshot-5shot-fixed.csv").set_index("Model")
    assert table.loc["ViT-B/16", "cifar10"] == pytest.approx(76.0)
    assert table.loc["ViT-B/16", "cifar10 std"] == pytest.approx(1.414, abs=1e-3)
    assert "76.0 ± 1.4" in text


def test_html_is_escaped(tmp_path):
    results = tmp_path / "results"
    rows = throughput_rows()
    for row in rows:
        if row["model"] == "Mixer-S/32":
            row["model"] = "<script>alert(1)</script>"
    write(results, "throughput", rows)
    _, text = render(tmp_path)
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_no_results_at_all_renders_the_paper_and_names_every_command(tmp_path, capsys):
    out, text = render(tmp_path)
    assert "Partial results" in text
    for command in report.COMMANDS.values():
        assert command in text
        assert command in capsys.readouterr().out or True
    assert text.count("<svg") == 2  # the paper's two figures
    assert_no_broken_references(out, text)


@pytest.mark.parametrize("present", [("flops",), ("throughput",), ("fewshot",), ("flops", "fewshot")])
def test_partial_results_render_and_say_what_is_missing(tmp_path, present):
    makers = {"flops": flops_rows, "throughput": throughput_rows, "fewshot": fewshot_rows}
    for kind in present:
        write(tmp_path / "results", kind, makers[kind]())
    out, text = render(tmp_path)
    for kind, command in report.COMMANDS.items():
        assert (command in text) == (kind not in present) or kind in present and command in text
        if kind not in present:
            assert f"{kind}.csv</code>" in text
    figures = len(re.findall(r'<figure id="figure-', text))
    expected = {("flops",): 3, ("throughput",): 5, ("fewshot",): 2, ("flops", "fewshot"): 4}[present]
    assert figures == expected == text.count("<svg")
    assert_no_broken_references(out, text)


def run_cli(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "suite.report", "--results", str(tmp_path / "results"),
         "--out", str(tmp_path / "out" / "index.html"), "--no-progress"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )


@pytest.mark.parametrize("kind,column,value,expected", [
    ("throughput", "images_per_sec", "fast", "images_per_sec 'fast' is not a number"),
    ("throughput", "status", "exploded", "status 'exploded' is not one of ok, oom, unsupported"),
    ("fewshot", "accuracy", 1.5, "accuracy 1.5 is outside [0, 1]"),
    ("flops", "gmacs", "", "gmacs is empty"),
    ("throughput", "batch_size", 0, "batch_size 0 is not positive"),
])
def test_malformed_value_exits_2_with_one_line_naming_file_and_row(tmp_path, capsys, kind, column, value, expected):
    makers = {"flops": flops_rows, "throughput": throughput_rows, "fewshot": fewshot_rows}
    rows = makers[kind]()
    rows[2][column] = value
    path = write(tmp_path / "results", kind, rows)
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out" / "index.html")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "line 4" in lines[0] and expected in lines[0]
    assert f"(model {rows[2]['model']!r})" in lines[0]
    assert not (tmp_path / "out" / "index.html").exists()


def test_cli_refuses_a_malformed_file_without_a_traceback(tmp_path):
    rows = throughput_rows()
    rows[5]["images_per_sec"] = "n/a?"
    path = write(tmp_path / "results", "throughput", rows)
    done = run_cli(tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"python -m suite.report: error: {path}: line 7 (model 'ViT-B/16'): "
                                   "images_per_sec 'n/a?' is not a number")


def test_missing_column_exits_2_naming_the_file(tmp_path):
    rows = throughput_rows()
    path = write(tmp_path / "results", "throughput", rows)
    pd.read_csv(path).drop(columns=["images_per_sec"]).to_csv(path, index=False)
    done = run_cli(tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert str(path) in done.stderr and "images_per_sec" in done.stderr


def test_out_follows_the_one_convention(tmp_path, capsys):
    """--out: a path ending in .html is the page; anything else a folder that gets index.html."""
    (tmp_path / "folder").mkdir()
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "folder"), "--no-progress"]) == 0
    assert (tmp_path / "folder" / "index.html").is_file()
    (tmp_path / "taken.html").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--results", str(tmp_path), "--out", str(tmp_path / "taken.html")])
    assert exit_info.value.code == 2
    assert "is a folder" in capsys.readouterr().err


def test_summary_is_printed(tmp_path, capsys):
    write(tmp_path / "results", "flops", flops_rows())
    render(tmp_path)
    out = capsys.readouterr().out
    assert "wrote" in out and "missing" in out and report.COMMANDS["throughput"] in out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_page_renders_in_a_headless_browser(full_report, tmp_path):
    out, _ = full_report
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1400,3000",
         out.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 3000)
    assert len(data) > 50_000  # a blank page compresses to a few kB


def test_edge_cases_failed_device_one_seed_and_two_weights(tmp_path):
    failed = [{**row, "device_name": "Test GPU C", "status": "oom", "images_per_sec": ""}
              for row in throughput_rows("Test GPU C")]
    failed[0].update(status="error", error="RuntimeError: <no kernel>\nfor this dtype")
    fewshot = fewshot_rows(("Mixer-B/16", "ViT-B/16"))
    fewshot = [r for r in fewshot if r["seed"] == 0]  # one seed: no std
    fewshot += [{**r, "weights": "mixer-b/16.other", "accuracy": 0.5} for r in fewshot if r["model"] == "Mixer-B/16"]
    write(tmp_path / "results", "throughput", throughput_rows() + failed)
    write(tmp_path / "results", "fewshot", fewshot)
    out, text = render(tmp_path)
    assert "Throughput on Test GPU C (bf16)" in text
    section = text.split('id="throughput-test-gpu-c-bf16"')[1].split("<section")[0]
    assert "No successful run for: BiT-R50x1, Mixer-B/16, Mixer-S/32, R50+ViT-B/16, ViT-B/16." in section
    assert "Mixer-B/16 failed: RuntimeError: &lt;no kernel&gt; for this dtype" in section
    assert "<table" not in section and "<svg" not in section
    table = pd.read_csv(out.parent / "table-fewshot-5shot-fixed.csv").set_index("Model")
    assert {"Mixer-B/16 (mixer-b/16.test)", "Mixer-B/16 (mixer-b/16.other)", "ViT-B/16"} == set(table.index)
    assert table["cifar10 std"].isna().all()
    body = text.split('id="table-fewshot-5shot-fixed"')[1].split("<tbody>")[1].split("</tbody>")[0]
    assert ">75.0<" in body and "±" not in body
    assert_no_broken_references(out, text)


def test_benchmark_render_report(benchmark, tmp_path):
    """How long a report of two devices, counting and few-shot takes (measured with --benchmark-enable)."""
    results = tmp_path / "results"
    write(results, "flops", flops_rows())
    write(results, "throughput", throughput_rows() + throughput_rows("Test GPU B", "fp32"))
    write(results, "fewshot", fewshot_rows())
    out = tmp_path / "bench" / "index.html"
    summary = benchmark.pedantic(report.build_report, args=(results, out), kwargs={"progress": False},
                                 rounds=1, iterations=1)
    assert summary["out"] == out and out.stat().st_size > 10_000
