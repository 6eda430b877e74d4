"""Tests of `python -m suite.throughput` on tiny models, on the CPU, with the clock, the peak and the
counter passed in (tests/fakes.py): rows, latency, failures, resume, presets, dry run, bad input."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from torch import nn

import suite.throughput as tp
from suite.build import build_for_timing, fill_random_
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS
from suite.settings import PRESETS, Settings
from suite.sweep import SweepState, stop_reason
from suite.zoo import get_spec
from tests import fakes
from tests.markers import needs_cuda


TIMM_COLUMNS = ("infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size", "infer_gmacs",
                "param_count")
SETTING_COLUMNS = ("preset", "warmup", "repeats", "min_time_s", "max_time_s", "precision_mode", "tf32", "cuda_graphs",
                   "model_budget_s", "flat_patience", "step_cap_s", "channels_last_rule", "channels_last_reason")
MEASURED_COLUMNS = ("noise", "iqr_rel", "step_time_p99_ms", "peak_reserved_mb", "mfu_datasheet", "telemetry",
                    "energy_j_per_image", "clock", "first_step_ms", "warmup_s")
#: Every test here means the CPU, whatever the host has.
FAST = ["--device", "cpu", "--img-size", "64", "--warmup", "0", "--repeats", "2", "--no-progress",
        "--flat-patience", "0", "--latency-steps", "0"]
MACS = 1_000_000_000


def read(path):
    return pd.read_csv(path)


def infer_rows(frame):
    return frame[frame["bench"] == "infer"]


def test_sweep_writes_every_column(tmp_path):
    out = tmp_path / "tp.csv"
    code = tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2", "--out", str(out), *FAST,
                    "--latency-steps", "3"], instruments=fakes.instruments(macs=MACS))
    assert code == 0
    frame = read(out)
    assert len(frame) == 6
    for column in (*SCHEMAS["throughput"], *ENVIRONMENT_COLUMNS, *TIMM_COLUMNS, *SETTING_COLUMNS, *MEASURED_COLUMNS,
                   "error", "latency_p50_ms", "latency_p99_ms"):
        assert column in frame.columns, column
    assert set(frame["status"]) == {"ok"}
    assert list(frame["bench"]) == ["latency", "infer", "infer"] * 2
    assert list(frame["batch_size"]) == [1, 1, 2] * 2
    row = infer_rows(frame).iloc[1]
    # The modelled clock: a step is 2 x MACs x batch over 1 TFLOP/s.
    assert row["step_time_median_ms"] == pytest.approx(2 * MACS * 2 / 1e12 * 1e3)
    assert row["images_per_sec"] == pytest.approx(2 / (row["step_time_median_ms"] / 1e3))
    assert row["achieved_tflops"] == pytest.approx(2 * MACS * row["images_per_sec"] / 1e12)
    assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.5)
    assert row["infer_gmacs"] == pytest.approx(MACS / 1e9, abs=0.01)
    assert row["param_count"] == pytest.approx(row["params"] / 1e6, abs=0.01)
    assert row["noise"] == "ok" and row["clock"] == "modelled"
    assert row["step_time_p10_ms"] <= row["step_time_median_ms"] <= row["step_time_p90_ms"]
    by_model = infer_rows(frame).set_index("model")
    assert by_model.loc["test_resnet", "channels_last"].all()  # auto: convolutions beyond a patch embedding
    assert not by_model.loc["test_vit", "channels_last"].any()
    assert (frame["precision_mode"] == "none").all() and not frame["tf32"].any()
    assert (infer_rows(frame)["build_method"] == "meta+to_empty+scaled-uniform").all()
    latency = frame[frame["bench"] == "latency"].iloc[0]
    assert latency["latency_p50_ms"] <= latency["latency_p99_ms"] and pd.isna(latency["infer_samples_per_sec"])


def test_out_may_name_a_folder(tmp_path):
    assert tp.main(["--models", "test_vit", "--batch-sizes", "1", "--out", str(tmp_path), *FAST],
                   instruments=fakes.instruments()) == 0
    assert len(read(tmp_path / "throughput.csv")) == 1


@pytest.mark.parametrize("failure, status", [
    (fakes.Failure("oom"), "oom"),
    (fakes.Failure("runtime", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear ..."), "unsupported"),
    (fakes.Failure("runtime", "CUDA error: invalid configuration argument"), "invalid_config"),
    (fakes.Failure("runtime", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), "oom"),
])
def test_failures_that_end_a_sweep_like_oom(tmp_path, capsys, failure, status):
    clocks = fakes.ModelledClocks(failures=((("test_vit", "infer", 2), failure),))
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2,4", "--out", str(out), *FAST],
                   instruments=fakes.instruments(clocks)) == 0
    frame = read(out)
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["status"]) == ["ok", status]  # batch 4 is not tried after the failure at 2
    assert list(vit["sweep_stop"].fillna("")) == ["", status]
    assert list(frame[frame["model"] == "test_resnet"]["status"]) == ["ok", "ok", "ok"]
    assert status in capsys.readouterr().out


def test_a_model_that_fails_to_build_is_an_error_row(tmp_path):
    out = tmp_path / "tp.csv"
    instruments = fakes.instruments(build=fakes.BrokenBuild("test_vit"))
    assert tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2", "--out", str(out), *FAST],
                   instruments=instruments) == 0
    frame = read(out)
    assert list(frame["status"]) == ["error", "ok", "ok"]
    assert frame.iloc[0]["error"] == "RuntimeError: no such layer"


def test_resume_measures_only_what_is_missing(tmp_path, capsys):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit,test_resnet", "--batch-sizes", "1,2,4", "--out", str(out), *FAST, "--in-process"]
    interrupt = fakes.ModelledClocks(failures=((("test_resnet", "infer", 1), fakes.Failure("interrupt")),))
    assert tp.main(args, instruments=fakes.instruments(interrupt)) == 130  # at the second model's first batch
    assert "--resume" in capsys.readouterr().err
    first = read(out)
    assert len(first) == 3 and set(first["status"]) == {"ok"}

    counting = fakes.CountingClocks()
    assert tp.main([*args, "--resume"], instruments=fakes.instruments(counting)) == 0
    assert counting.measured == [("test_resnet", "infer", 1), ("test_resnet", "infer", 2), ("test_resnet", "infer", 4)]
    final = read(out)
    assert len(final) == 6 and not final.duplicated(["model", "batch_size"]).any()

    counting = fakes.CountingClocks()
    assert tp.main([*args, "--resume"], instruments=fakes.instruments(counting)) == 0
    assert counting.measured == [] and len(read(out)) == 6
    assert tp.main([*args, "--resume", "--precision", "bf16"], instruments=fakes.instruments()) == 0
    assert len(read(out)) == 12  # other settings: measured anew


def test_resume_respects_where_a_sweep_stopped(tmp_path):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--batch-sizes", "1,2,4", "--out", str(out), *FAST, "--in-process"]
    tp.main(args, instruments=fakes.instruments(fakes.ModelledClocks(
        failures=((("test_vit", "infer", 2), fakes.Failure("oom")),))))
    counting = fakes.CountingClocks()
    tp.main([*args, "--resume"], instruments=fakes.instruments(counting))
    assert counting.measured == [] and len(read(out)) == 2


def test_resume_extends_a_sweep_that_ran_out_of_batch_sizes(tmp_path):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--out", str(out), *FAST, "--in-process"]
    tp.main([*args, "--batch-sizes", "1,2"], instruments=fakes.instruments())
    counting = fakes.CountingClocks()
    tp.main([*args, "--batch-sizes", "1,2,4", "--resume"], instruments=fakes.instruments(counting))
    assert counting.measured == [("test_vit", "infer", 4)]
    assert list(read(out)["batch_size"]) == [1, 2, 4]


def test_flat_throughput_ends_the_sweep(tmp_path):
    out = tmp_path / "tp.csv"
    # A fixed step time: images/sec doubles with the batch, never flat.
    clocks = fakes.ModelledClocks(step_s=(("test_vit", 0.05),))
    tp.main(["--models", "test_vit", "--batch-sizes", "1,2,4", "--out", str(out), *FAST, "--flat-patience", "1"],
            instruments=fakes.instruments(clocks))
    assert list(read(out)["sweep_stop"].fillna("")) == ["", "", "last"]
    settings = Settings(device=torch.device("cpu"), flat_patience=1, flat_tolerance=0.02)
    state = SweepState()
    state.record(1, 100.0, 0.01, 0.02)
    state.record(2, 101.0, 0.02, 0.02)
    assert stop_reason(state, 4, settings, None) == "flat"
    assert stop_reason(state, None, settings, None) == "last"


def test_the_gpu_preset_stops_after_two_doublings_under_three_percent():
    settings = Settings.from_preset(torch.device("cuda"), "gpu")
    state = SweepState()
    for batch, ips in ((32, 1000.0), (64, 1500.0), (128, 1520.0)):
        state.record(batch, ips, batch / ips, settings.flat_tolerance)
        assert stop_reason(state, batch * 2, settings, None) == ""  # one flat doubling is not enough
    state.record(256, 1540.0, 256 / 1540.0, settings.flat_tolerance)
    assert stop_reason(state, 512, settings, None) == "flat"


def test_a_step_over_the_cap_ends_the_sweep():
    settings = Settings.from_preset(torch.device("cuda"), "gpu")
    state = SweepState()
    state.record(1024, 900.0, 1.2, settings.flat_tolerance)
    assert stop_reason(state, 2048, settings, None) == "step_cap"


def test_budget_skips_batches_that_would_not_fit():
    settings = Settings(device=torch.device("cpu"), warmup_steps=1)
    state = SweepState()
    state.record(1, 10.0, 1.0, 0.02)
    assert stop_reason(state, 2, settings, remaining_s=7.0) == "budget"  # 2 s x (1 warm-up + 3 floor) > 7 s
    assert stop_reason(state, 2, settings, remaining_s=9.0) == ""


def test_the_model_budget_is_honoured_within_a_batch(tmp_path):
    out = tmp_path / "tp.csv"
    clocks = fakes.ModelledClocks(step_s=(("test_vit", 0.5),))
    tp.main(["--models", "test_vit", "--batch-sizes", "1,2,4", "--out", str(out), *FAST, "--repeats", "100",
             "--model-budget", "2.5", "--warmup", "1"], instruments=fakes.instruments(clocks))
    frame = read(out)
    # 1 warm-up step, then 100 steps asked for but 4 fit in the 2.5 s budget: warm-up + timed <= budget,
    # and batch 2 (at least 2 x 0.5 s x 4 steps) no longer fits.
    assert list(frame["timed_steps"]) == [4] and frame.iloc[0]["sweep_stop"] == "budget"
    assert frame.iloc[0]["warmup_s"] + 4 * 0.5 <= 2.5


def test_shards_split_the_models():
    specs = [get_spec(n) for n in ("test_vit", "test_resnet", "test_convnext")]
    assert [s.name for s in tp.shard(specs, (1, 2))] == ["test_vit", "test_convnext"]
    assert [s.name for s in tp.shard(specs, (2, 2))] == ["test_resnet"]
    assert tp.shard(specs, None) == specs


@pytest.mark.parametrize("argv, fragment", [
    (["--models", "Mixer-Q/99"], "unknown model"),
    (["--batch-sizes", "0"], "positive integers"),
    (["--batch-sizes", "4,x"], "positive integers"),
    (["--shard", "0/2"], "1 <= i <= n"),
    (["--shard", "3/2"], "1 <= i <= n"),
    (["--shard", "two"], "i/n"),
    (["--precision", "tf32", "--device", "cpu"], "tf32 needs a CUDA device"),
    (["--cuda-graphs", "--device", "cpu"], "needs a CUDA device"),
    (["--device", "tpu"], "device"),
    (["--min-time", "-1"], "number >= 0"),
    (["--preset", "tpu"], "invalid choice"),
    (["--compile", "--compile-backend", "nonsense", "--device", "cpu"], "unknown --compile-backend"),
    (["--peak-of", "h100"], "--dry-run"),
    (["--retry-crashed"], "--resume"),
    (["--peak-rule", "fastest"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(argv, fragment, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        tp.main([*argv, "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        tp.main(["--models", "test_vit", "--out", str(blocker / "tp.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err


def test_corrupt_results_file_exits_2_on_resume(tmp_path, capsys):
    out = tmp_path / "tp.csv"
    out.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SystemExit) as exc:
        tp.main(["--models", "test_vit", "--out", str(out), "--resume"])
    assert exc.value.code == 2
    assert str(out) in capsys.readouterr().err


def test_fill_random_is_never_zero_and_keeps_scale():
    model = nn.Sequential(nn.Linear(256, 512), nn.LayerNorm(512), nn.BatchNorm1d(512)).to_empty(device="cpu")
    fill_random_(model)
    weight = model[0].weight
    assert torch.count_nonzero(weight) == weight.numel()
    assert weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.1)
    assert model[0].bias.abs().max() <= 0.02
    assert 0.9 <= model[1].weight.min() and model[1].weight.max() <= 1.1
    assert torch.all(model[2].running_var == 1) and torch.all(model[2].running_mean == 0)
    assert torch.isfinite(model(torch.randn(4, 256))).all()


def test_models_with_other_buffers_are_built_the_ordinary_way():
    spec = fakes.indexed_spec()
    built = build_for_timing(spec, 4, "paper", torch.device("cpu"))
    assert built.method == "timm-init"
    assert torch.equal(built.model.index, torch.arange(4))
    assert built.params == 20


def test_too_big_for_memory_is_oom_before_allocating():
    with pytest.raises(MemoryError):
        build_for_timing(get_spec("test_vit"), 64, "paper", torch.device("cpu"), free_bytes=lambda device: 1000)


def test_pure_bf16_on_cpu_runs_in_bf16(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--batch-sizes", "2", "--precision", "bf16", "--mode", "pure",
                    "--out", str(out), *FAST], instruments=fakes.instruments()) == 0
    row = read(out).iloc[0]
    assert row["status"] == "ok" and row["precision"] == "bf16" and row["precision_mode"] == "pure"


def test_summary_names_the_best_batch_and_marks_noise():
    rows = [
        {"model": "m", "bench": "infer", "status": "ok", "batch_size": 1, "images_per_sec": 10.0,
         "step_time_median_ms": 100.0, "step_time_p10_ms": 90.0, "step_time_p90_ms": 110.0, "sweep_stop": "",
         "noise": "ok"},
        {"model": "m", "bench": "infer", "status": "ok", "batch_size": 2, "images_per_sec": 15.0,
         "step_time_median_ms": 133.0, "step_time_p10_ms": 120.0, "step_time_p90_ms": 140.0, "sweep_stop": "last",
         "noise": "very noisy"},
        {"model": "m", "bench": "latency", "status": "ok", "batch_size": 1, "images_per_sec": 9.0,
         "latency_p50_ms": 111.0, "latency_p99_ms": 130.0},
        {"model": "n", "bench": "infer", "status": "oom", "batch_size": 1, "sweep_stop": "oom"},
    ]
    table = tp.summary(rows).splitlines()
    assert table[1].split()[:3] == ["m", "2", "15.0**"]
    assert "111.0/130.0" in table[1]
    assert "oom" in table[2]
    assert "very noisy" in table[-1]


def test_cpu_peak_is_measured_again_for_each_model_and_the_largest_is_kept(tmp_path):
    peaks = fakes.SequencePeaks([0.1, 0.25, 0.2, 0.2, 0.3])
    out = tmp_path / "tp.csv"
    tp.main(["--models", "test_vit,test_resnet,test_vit2", "--batch-sizes", "1", "--out", str(out), *FAST,
             "--in-process"], instruments=fakes.instruments(peak=peaks))
    assert peaks.calls == 5  # the run's first peak is the best of three
    # A busier moment (0.2) never lowers the peak MFU is divided by; a quieter one (0.3) raises it.
    assert read(out)["peak_tflops"].tolist() == [0.25, 0.25, 0.3]


# --------------------------------------------------------------------------------------------------
# Presets and the dry run
# --------------------------------------------------------------------------------------------------

def test_presets_are_written_once_and_the_help_comes_from_them(capsys):
    with pytest.raises(SystemExit):
        tp.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, preset in PRESETS.items():
        assert f"{name}: {','.join(map(str, preset.batch_sizes[:2]))}" in text
        assert preset.description in text
    assert f"gpu: {PRESETS['gpu'].model_budget_s:g}" in text and f"cpu: {PRESETS['cpu'].model_budget_s:g}" in text


def test_the_default_gpu_lineup_is_planned_within_15_minutes_on_an_h100(capsys):
    assert tp.main(["--models", "all", "--dry-run", "--peak-of", "h100"]) == 0
    text = capsys.readouterr().out
    minutes = float(re.search(r"estimated total: ([\d.]+) min", text).group(1))
    assert minutes <= 15.0
    assert "preset gpu" in text and "precision=bf16" in text and "989.5" in text
    assert "Mixer-B/16" in text and "EfficientNet-L2" in text


def test_the_paper_preset_plans_the_full_sweep(capsys):
    assert tp.main(["--models", "ViT-B/16", "--dry-run", "--peak-of", "h100", "--preset", "paper"]) == 0
    text = capsys.readouterr().out
    assert "32,64,128,256,512,1024,2048,4096,8192" in text


def test_a_cpu_dry_run_measures_nothing_but_the_peak(tmp_path, capsys):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--device", "cpu", "--dry-run", "--out", str(out)]) == 0
    assert not out.exists()
    text = capsys.readouterr().out
    assert "preset cpu" in text and "measured" in text and "estimated total" in text


# --------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------

def test_nine_models_of_one_class_at_three_batch_sizes_are_each_really_compiled(tmp_path):
    """Every ViT shares VisionTransformer.forward: without a reset per model and batch, dynamo would
    pile up cache entries and run the 9th shape eager. Each row must come from a compiled graph."""
    specs = fakes.tiny_vit_specs(9)
    settings = Settings.from_preset(torch.device("cpu"), "cpu", compile=True, compile_backend="eager",
                                    batch_sizes=(1, 2, 4), warmup_steps=1, min_steps=2, flat_patience=0,
                                    latency_steps=0, model_budget_s=0.0)
    out = tmp_path / "tp.csv"
    tp.run(specs, settings, out, progress=False, in_process=True, instruments=fakes.instruments())
    frame = read(out)
    assert len(frame) == 27
    assert set(frame["status"]) == {"ok"}
    assert (frame["compile_graphs"] >= 1).all() and (frame["compile_frames"] >= 1).all()
    assert set(frame["compile_status"]) == {"compiled"}
    assert (frame["compile_s"] > 0).all() and (frame["compile_backend"] == "eager").all()


# --------------------------------------------------------------------------------------------------
# CUDA (skipped without one)
# --------------------------------------------------------------------------------------------------

@needs_cuda
def test_cuda_bf16_autocast_with_peak_memory_and_telemetry(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--device", "cuda", "--batch-sizes", "8", "--img-size", "64",
                    "--no-progress", "--out", str(out)]) == 0
    frame = read(out)
    row = infer_rows(frame).iloc[0]
    assert row["status"] == "ok" and row["precision"] == "bf16" and row["precision_mode"] == "autocast"
    assert row["peak_memory_mb"] > 0 and row["peak_reserved_mb"] >= row["peak_memory_mb"]
    assert row["clock"] == "cuda-events" and row["preset"] == "gpu"


@needs_cuda
def test_cuda_graphs_and_tf32(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--device", "cuda", "--batch-sizes", "8", "--precision", "tf32",
                    "--img-size", "64", "--cuda-graphs", "--no-progress", "--out", str(out)]) == 0
    row = infer_rows(read(out)).iloc[0]
    assert row["status"] == "ok" and bool(row["tf32"]) and bool(row["cuda_graphs"])


@needs_cuda
def test_cuda_graphs_on_a_second_device(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--batch-sizes", "64", "--img-size", "64", "--no-progress", "--latency-steps", "0"]
    tp.main([*args, "--device", "cuda:1", "--cuda-graphs", "--out", str(out)])
    tp.main([*args, "--device", "cuda:1", "--out", str(out)])
    graphs, plain = read(out)["images_per_sec"].tolist()
    assert 0.5 < graphs / plain < 3  # an empty capture would be orders of magnitude "faster"


# --------------------------------------------------------------------------------------------------
# What a measurement records
# --------------------------------------------------------------------------------------------------

def test_peak_memory_is_reset_after_the_warmup_and_read_after_timing(tmp_path):
    log = fakes.EventLog()
    out = tmp_path / "tp.csv"
    tp.main(["--models", "test_vit", "--batch-sizes", "2", "--out", str(out), *FAST, "--warmup", "3", "--repeats",
             "5", "--in-process"],
            instruments=fakes.instruments(fakes.LoggedClocks(log), memory=fakes.LoggedMemory(log)))
    assert log.events == ["step"] * 3 + ["reset"] + ["step"] * 5 + ["read"]  # autotuning is not counted
    row = read(out).iloc[0]
    assert row["peak_memory_mb"] == 100.0 and row["peak_reserved_mb"] == 120.0


def test_every_timed_batch_records_clock_power_and_energy(tmp_path):
    out = tmp_path / "tp.csv"
    tp.main(["--models", "test_vit", "--batch-sizes", "2,4", "--out", str(out), *FAST, "--latency-steps", "3"],
            instruments=fakes.instruments(telemetry=fakes.FakeNvmlTelemetry(watts=400.0)))
    frame = read(out)
    assert (frame["telemetry"] == "nvml").all() and (frame["sm_clock_min_mhz"] == 1740).all()
    assert frame["power_w"].between(300, 500).all() and (frame["temperature_c"] >= 60).all()
    sweep = infer_rows(frame)
    expected = sweep["energy_j"] / (sweep["timed_steps"] * sweep["batch_size"])
    assert sweep["energy_j_per_image"].tolist() == pytest.approx(expected.tolist())


def test_mfu_reads_both_ways_on_a_known_gpu():
    from suite.sweep import BatchResult, fill_measurement
    from suite.peaks import Peak
    from suite.telemetry import Reading
    from suite.timing import ConstantClock, Measurement

    row = {"bench": "infer", "batch_size": 256, "img_size": 224, "precision": "bf16", "device": "cuda:0",
           "device_name": "NVIDIA H100 80GB HBM3"}
    result = BatchResult(Measurement((0.1,) * 10), Reading("nvml", 1.0, 20, 1755.0, 1740.0, 61.0, 650.0, 650.0))
    peak = Peak(720.0, "bf16", 8192, "sustained", 100, 1.0)
    fill_measurement(row, result, 10**10, peak, 86_000_000, ConstantClock(0.1))
    achieved = 2 * 10**10 * 2560 / 1e12
    assert row["achieved_tflops"] == pytest.approx(achieved)
    assert row["mfu"] == pytest.approx(achieved / 720.0)
    assert row["datasheet_tflops"] == 989.5 and row["mfu_datasheet"] == pytest.approx(achieved / 989.5)
    assert row["energy_j_per_image"] == pytest.approx(650.0 / 2560)


def test_the_docs_preset_table_is_the_presets():
    """docs/throughput.md shows the presets; this keeps it from drifting from suite.settings.PRESETS."""
    from pathlib import Path

    from suite.settings import _show, preset_fields

    text = (Path(__file__).parents[1] / "docs" / "throughput.md").read_text()
    table = text.split("<!-- presets-table -->", 1)[1].strip().split("\n\n", 1)[0].splitlines()[2:]
    flags = {f.metadata["flag"]: f.name for f in preset_fields()}
    seen = set()
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        flag = re.search(r"\(`(--[a-z-]+)`", cells[0]).group(1)
        field_name = flags[flag]
        assert cells[1:] == [_show(getattr(PRESETS[p], field_name)) for p in ("cpu", "gpu", "paper")], flag
        seen.add(flag)
    assert seen == set(flags)
