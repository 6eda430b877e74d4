"""Tests of suite.timing: statistics, stopping rules, TF32 flags, the matmul peak, harness overhead."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from suite.timing import Timing, measure_peak_tflops, precision_flags, time_callable

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_statistics_match_numpy():
    times = (0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.35)
    timing = Timing(times, warmup_steps=2)
    assert timing.steps == 7
    assert timing.median_s == pytest.approx(np.median(times))
    assert timing.p10_s == pytest.approx(np.quantile(times, 0.10))
    assert timing.p90_s == pytest.approx(np.quantile(times, 0.90))
    assert timing.iqr_s == pytest.approx(np.quantile(times, 0.75) - np.quantile(times, 0.25))
    assert timing.mean_s == pytest.approx(np.mean(times))


def test_warmup_calls_are_not_timed():
    calls = []
    timing = time_callable(lambda: calls.append(1), "cpu", warmup=4, repeats=6)
    assert len(calls) == 10
    assert timing.steps == 6 and timing.warmup_steps == 4


def test_min_time_adds_steps_beyond_repeats():
    timing = time_callable(lambda: time.sleep(0.01), "cpu", warmup=0, repeats=2, min_time_s=0.06)
    assert timing.steps >= 5
    assert timing.total_s >= 0.06


def test_max_time_cuts_repeats_but_keeps_the_floor():
    timing = time_callable(lambda: time.sleep(0.02), "cpu", warmup=0, repeats=1000, max_time_s=0.01, min_repeats=3)
    assert timing.steps == 3
    timing = time_callable(lambda: time.sleep(0.01), "cpu", warmup=0, repeats=1000, max_time_s=0.05, min_repeats=1)
    assert 3 <= timing.steps < 50


def test_median_reflects_the_callable():
    timing = time_callable(lambda: time.sleep(0.02), "cpu", warmup=1, repeats=5)
    assert 0.02 <= timing.median_s < 0.2


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        time_callable(lambda: None, "cpu", repeats=0)


def test_precision_flags_are_explicit_and_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision_flags("tf32", torch.device("cpu")) as tf32:
        assert tf32 is False  # no TF32 on a CPU: the row must say so
    with precision_flags("fp32", torch.device("cpu")) as tf32:
        assert tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(ValueError):
        with precision_flags("fp8", torch.device("cpu")):
            pass


def test_peak_is_measured_and_cached():
    peak = measure_peak_tflops("cpu", "fp32", size=256, warmup=1, repeats=3)
    assert peak > 0
    assert measure_peak_tflops("cpu", "fp32", size=256, warmup=1, repeats=3) == peak
    assert measure_peak_tflops("cpu", "fp32", size=256, warmup=1, repeats=3, fresh=True) > 0


def test_bench_harness_overhead(benchmark):
    """What time_callable adds per timed step on top of a trivial model (nn.Identity).

    The benchmark times the whole harness call; extra_info records the per-step overhead, i.e. the
    harness's wall time per step minus the bare call's time per step, measured back to back.
    """
    model = torch.nn.Identity()
    x = torch.randn(8, 8)
    steps = 2000

    def bare_per_step() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        return (time.perf_counter() - start) / steps

    def harness() -> tuple[Timing, float]:
        start = time.perf_counter()
        timing = time_callable(lambda: model(x), "cpu", warmup=0, repeats=steps, min_repeats=1)
        return timing, (time.perf_counter() - start) / steps

    timing, harness_per_step = benchmark(harness)
    bare = bare_per_step()
    benchmark.extra_info["bare_call_us"] = bare * 1e6
    benchmark.extra_info["harness_step_us"] = harness_per_step * 1e6
    benchmark.extra_info["overhead_per_step_us"] = (harness_per_step - bare) * 1e6
    assert timing.steps == steps
    assert timing.median_s <= harness_per_step * 10


@needs_cuda
def test_cuda_events_time_device_work():
    a = torch.randn(2048, 2048, device="cuda")
    timing = time_callable(lambda: a @ a, "cuda", warmup=3, repeats=10)
    assert timing.steps == 10
    assert 0 < timing.median_s < 1.0


@needs_cuda
def test_cuda_min_time_is_reached_in_chunks():
    a = torch.randn(1024, 1024, device="cuda")
    timing = time_callable(lambda: a @ a, "cuda", warmup=2, repeats=5, min_time_s=0.05)
    assert timing.total_s >= 0.05 and timing.steps > 5


@needs_cuda
def test_cuda_peaks_per_precision():
    fp32 = measure_peak_tflops("cuda", "fp32", size=4096)
    bf16 = measure_peak_tflops("cuda", "bf16", size=4096)
    assert fp32 > 0 and bf16 > fp32
