"""Tests of the throughput harness on tiny models (CPU): rows, OOM, resume, errors, bad input."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

import suite.throughput as tp
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS
from suite.timing import Timing
from suite.zoo import get_spec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TIMM_COLUMNS = ("infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size", "infer_gmacs",
                "param_count")
SETTING_COLUMNS = ("warmup", "repeats", "min_time_s", "precision_mode", "tf32", "cuda_graphs", "model_budget_s")
FAST = ["--img-size", "64", "--warmup", "0", "--repeats", "2", "--no-progress", "--no-stop-when-flat"]
MACS = 1_000_000


@pytest.fixture(autouse=True)
def fixed_macs(monkeypatch):
    """MACs come from suite.counting; a fixed count keeps these tests independent of it."""
    monkeypatch.setattr(tp, "count_macs", lambda spec, img, rule: MACS)
    monkeypatch.setattr(tp, "measure_peak_tflops", lambda device, precision, **kwargs: 0.5)
    monkeypatch.setattr(tp, "_best_peaks", {})


class FakeClock:
    """Replaces time_callable: counts calls per (model input batch), can fail at chosen calls."""

    def __init__(self, fail_at: dict[int, BaseException] | None = None, step_s: float = 0.01):
        self.calls: list[int] = []
        self.fail_at = fail_at or {}
        self.step_s = step_s

    def __call__(self, fn, device, **kwargs):
        self.calls.append(len(self.calls))
        error = self.fail_at.get(len(self.calls))
        if error is not None:
            raise error
        fn()
        return Timing((self.step_s, self.step_s * 1.1, self.step_s * 0.9), kwargs.get("warmup", 0))


def read(path):
    return pd.read_csv(path)


def test_sweep_writes_every_column(tmp_path):
    out = tmp_path / "tp.csv"
    code = tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2", "--out", str(out), *FAST])
    assert code == 0
    frame = read(out)
    assert len(frame) == 4
    for column in (*SCHEMAS["throughput"], *ENVIRONMENT_COLUMNS, *TIMM_COLUMNS, *SETTING_COLUMNS, "error"):
        assert column in frame.columns, column
    assert set(frame["status"]) == {"ok"}
    assert list(frame["batch_size"]) == [1, 2, 1, 2]
    row = frame.iloc[1]
    assert row["images_per_sec"] == pytest.approx(2 / (row["step_time_median_ms"] / 1e3))
    assert row["achieved_tflops"] == pytest.approx(2 * MACS * row["images_per_sec"] / 1e12)
    assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.5)
    assert row["infer_gmacs"] == pytest.approx(MACS / 1e9, abs=0.01)
    assert row["param_count"] == pytest.approx(row["params"] / 1e6, abs=0.01)
    assert row["step_time_p10_ms"] <= row["step_time_median_ms"] <= row["step_time_p90_ms"]
    assert frame.set_index("model").loc["test_resnet", "channels_last"].all()  # auto: on for conv
    assert not frame.set_index("model").loc["test_vit", "channels_last"].any()
    assert (frame["precision_mode"] == "none").all() and not frame["tf32"].any()
    assert (frame["build_method"] == "meta+to_empty+scaled-uniform").all()


def test_out_may_name_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "time_callable", FakeClock())
    assert tp.main(["--models", "test_vit", "--batch-sizes", "1", "--out", str(tmp_path), *FAST]) == 0
    assert len(read(tmp_path / "throughput.csv")) == 1


def test_oom_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    clock = FakeClock({2: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")})
    monkeypatch.setattr(tp, "time_callable", clock)
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2,4", "--out", str(out), *FAST]) == 0
    frame = read(out)
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["status"]) == ["ok", "oom"]  # batch 4 is not tried after an OOM at 2
    assert "out of memory" in vit.iloc[1]["error"]
    assert list(frame[frame["model"] == "test_resnet"]["status"]) == ["ok", "ok", "ok"]
    assert "oom" in capsys.readouterr().out


def test_cpu_allocation_failure_counts_as_oom():
    assert tp.is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert tp.is_out_of_memory(MemoryError())
    assert not tp.is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_model_that_fails_to_build_is_an_error_row(tmp_path, monkeypatch):
    real = tp.build_model

    def broken(spec, **kwargs):
        if spec.name == "test_vit":
            raise RuntimeError("no such layer\nsecond line")
        return real(spec, **kwargs)

    monkeypatch.setattr(tp, "build_model", broken)
    monkeypatch.setattr(tp, "time_callable", FakeClock())
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit,test_resnet", "--batch-sizes", "1,2", "--out", str(out), *FAST]) == 0
    frame = read(out)
    assert list(frame["status"]) == ["error", "ok", "ok"]
    assert frame.iloc[0]["error"] == "RuntimeError: no such layer"


def test_resume_measures_only_what_is_missing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit,test_resnet", "--batch-sizes", "1,2,4", "--out", str(out), *FAST]
    monkeypatch.setattr(tp, "time_callable", FakeClock({4: KeyboardInterrupt()}))
    assert tp.main(args) == 130  # interrupted at the first batch of the second model
    assert "--resume" in capsys.readouterr().err
    first = read(out)
    assert len(first) == 3 and set(first["status"]) == {"ok"}

    clock = FakeClock()
    monkeypatch.setattr(tp, "time_callable", clock)
    assert tp.main([*args, "--resume"]) == 0
    assert len(clock.calls) == 3
    final = read(out)
    assert len(final) == 6
    assert not final.duplicated(["model", "batch_size"]).any()

    clock = FakeClock()
    monkeypatch.setattr(tp, "time_callable", clock)
    assert tp.main([*args, "--resume"]) == 0
    assert clock.calls == [] and len(read(out)) == 6
    assert tp.main([*args, "--resume", "--precision", "bf16"]) == 0  # other settings: measured anew
    assert len(read(out)) == 12


def test_resume_respects_where_a_sweep_stopped(tmp_path, monkeypatch):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--batch-sizes", "1,2,4", "--out", str(out), *FAST]
    monkeypatch.setattr(tp, "time_callable", FakeClock({2: torch.cuda.OutOfMemoryError("out of memory")}))
    tp.main(args)
    clock = FakeClock()
    monkeypatch.setattr(tp, "time_callable", clock)
    tp.main([*args, "--resume"])
    assert clock.calls == [] and len(read(out)) == 2


def test_resume_extends_a_sweep_that_ran_out_of_batch_sizes(tmp_path, monkeypatch):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--out", str(out), *FAST]
    monkeypatch.setattr(tp, "time_callable", FakeClock())
    tp.main([*args, "--batch-sizes", "1,2"])
    clock = FakeClock()
    monkeypatch.setattr(tp, "time_callable", clock)
    tp.main([*args, "--batch-sizes", "1,2,4", "--resume"])
    assert len(clock.calls) == 1
    assert list(read(out)["batch_size"]) == [1, 2, 4]


def test_flat_throughput_ends_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "time_callable", FakeClock(step_s=0.05))  # same step time: images/sec grows
    out = tmp_path / "tp.csv"
    tp.main(["--models", "test_vit", "--batch-sizes", "1,2,4", "--out", str(out), *FAST[:-1], "--stop-when-flat"])
    assert list(read(out)["sweep_stop"].fillna("")) == ["", "", "last"]
    state = tp.SweepState()
    state.record(1, 100.0, 0.01, 0.02)
    state.record(2, 101.0, 0.02, 0.02)
    settings = tp.Settings(device=torch.device("cpu"), stop_when_flat=True)
    assert tp.stop_reason(state, 4, settings, None) == "flat"
    assert tp.stop_reason(state, None, settings, None) == "last"


def test_budget_skips_batches_that_would_not_fit():
    settings = tp.Settings(device=torch.device("cpu"), stop_when_flat=False, warmup=1)
    state = tp.SweepState()
    state.record(1, 10.0, 1.0, 0.02)
    assert tp.stop_reason(state, 2, settings, remaining_s=7.0) == "budget"  # 2 s x 4 steps > 7 s
    assert tp.stop_reason(state, 2, settings, remaining_s=9.0) == ""


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
    tp.fill_random_(model)
    weight = model[0].weight
    assert torch.count_nonzero(weight) == weight.numel()
    assert weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.1)
    assert model[0].bias.abs().max() <= 0.02
    assert 0.9 <= model[1].weight.min() and model[1].weight.max() <= 1.1
    assert torch.all(model[2].running_var == 1) and torch.all(model[2].running_mean == 0)
    assert torch.isfinite(model(torch.randn(4, 256))).all()


def test_models_with_other_buffers_are_built_the_ordinary_way(monkeypatch):
    class WithIndex(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.register_buffer("index", torch.arange(4))

        def forward(self, x):
            return self.proj(x)[..., self.index]

    def fake_build(spec, *, device=None, **kwargs):
        with torch.device(device or "cpu"):
            return WithIndex().eval()

    monkeypatch.setattr(tp, "build_model", fake_build)
    built = tp.build_for_timing(get_spec("test_vit"), 64, "paper", torch.device("cpu"))
    assert built.method == "timm-init"
    assert torch.equal(built.model.index, torch.arange(4))
    assert built.params == 20


def test_too_big_for_memory_is_oom_before_allocating(monkeypatch):
    monkeypatch.setattr(tp, "free_memory_bytes", lambda device: 1000)
    with pytest.raises(MemoryError):
        tp.build_for_timing(get_spec("test_vit"), 64, "paper", torch.device("cpu"))


def test_pure_bf16_on_cpu_runs_in_bf16(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--batch-sizes", "2", "--precision", "bf16", "--mode", "pure",
                    "--out", str(out), *FAST]) == 0
    row = read(out).iloc[0]
    assert row["status"] == "ok" and row["precision"] == "bf16" and row["precision_mode"] == "pure"


def test_summary_names_the_best_batch():
    rows = [
        {"model": "m", "status": "ok", "batch_size": 1, "images_per_sec": 10.0, "step_time_median_ms": 100.0,
         "step_time_p10_ms": 90.0, "step_time_p90_ms": 110.0, "sweep_stop": ""},
        {"model": "m", "status": "ok", "batch_size": 2, "images_per_sec": 15.0, "step_time_median_ms": 133.0,
         "step_time_p10_ms": 120.0, "step_time_p90_ms": 140.0, "sweep_stop": "last"},
        {"model": "n", "status": "oom", "batch_size": 1, "sweep_stop": "oom"},
    ]
    table = tp.summary_table(rows).splitlines()
    assert table[1].split()[:3] == ["m", "2", "15.0"]
    assert "oom" in table[2]


@needs_cuda
def test_cuda_bf16_autocast_with_peak_memory(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--device", "cuda", "--batch-sizes", "8", "--precision", "bf16",
                    "--out", str(out), *FAST]) == 0
    row = read(out).iloc[0]
    assert row["status"] == "ok" and row["precision_mode"] == "autocast" and row["peak_memory_mb"] > 0


@needs_cuda
def test_cuda_graphs_and_tf32(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--device", "cuda", "--batch-sizes", "8", "--precision", "tf32",
                    "--cuda-graphs", "--out", str(out), *FAST]) == 0
    row = read(out).iloc[0]
    assert row["status"] == "ok" and bool(row["tf32"]) and bool(row["cuda_graphs"])


def test_cpu_peak_is_measured_again_for_each_model_and_the_largest_is_kept(tmp_path, monkeypatch):
    calls = []
    measured = iter([0.1, 0.25, 0.2, 0.2, 0.3])
    monkeypatch.setattr(tp, "measure_peak_tflops", lambda device, precision, **kw: calls.append(kw) or next(measured))
    monkeypatch.setattr(tp, "time_callable", FakeClock())
    out = tmp_path / "tp.csv"
    tp.main(["--models", "test_vit,test_resnet,test_vit2", "--batch-sizes", "1", "--out", str(out), *FAST])
    assert calls == [{"fresh": True}] * 5  # the run's first peak is the best of three
    # A busier moment (0.2) never lowers the peak MFU is divided by; a quieter one (0.3) raises it.
    assert read(out)["peak_tflops"].tolist() == [0.25, 0.25, 0.3]
