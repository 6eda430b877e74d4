"""Tests of suite.timing: statistics and noise, the warm-up and timing rules (with clocks passed in),
TF32 flags through torch's new and legacy APIs, harness overhead."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from suite.timing import (ConstantClock, CudaEventClock, HostClock, Measurement, TimingRules, precision_flags,
                          tf32_state, time_callable, time_steps, warm_up)
from tests.fakes import FakeCuda
from tests.markers import needs_cuda



class RampClock:
    """A device that starts cold: steps take `cold_s` until `ramp_s` seconds have run, then `hot_s`."""

    name = "ramp"

    def __init__(self, cold_s: float, hot_s: float, ramp_s: float) -> None:
        self.cold_s, self.hot_s, self.ramp_s, self.elapsed, self.chunks = cold_s, hot_s, ramp_s, 0.0, []

    def run(self, fn, steps, between=None):
        times = []
        for _ in range(steps):
            step = self.cold_s if self.elapsed < self.ramp_s else self.hot_s
            self.elapsed += step
            times.append(step)
        self.chunks.append(steps)
        return times


def test_statistics_match_numpy():
    times = (0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.35)
    m = Measurement(times, warmup_steps=2)
    assert m.steps == 7
    assert m.median_s == pytest.approx(np.median(times))
    assert m.p10_s == pytest.approx(np.quantile(times, 0.10))
    assert m.p90_s == pytest.approx(np.quantile(times, 0.90))
    assert m.p99_s == pytest.approx(np.quantile(times, 0.99))
    assert m.iqr_s == pytest.approx(np.quantile(times, 0.75) - np.quantile(times, 0.25))
    assert m.mean_s == pytest.approx(np.mean(times))


@pytest.mark.parametrize("spread, noise", [(0.0, "ok"), (0.09, "ok"), (0.15, "noisy"), (0.4, "very noisy")])
def test_a_measurement_says_when_it_is_too_noisy(spread, noise):
    # Quartiles at 1 -/+ spread/2: IQR / median = spread.
    times = tuple(np.linspace(1 - spread, 1 + spread, 101))
    m = Measurement(times)
    assert m.iqr_rel == pytest.approx(spread, abs=1e-9)
    assert m.noise == noise
    assert ("too wide to trust" in str(m)) == (noise != "ok")


def test_warmup_by_steps_and_by_time():
    clock = ConstantClock(0.01)
    warm = warm_up(lambda: None, clock, TimingRules(warmup_steps=3, warmup_s=0.0))
    assert warm.steps == 3
    clock = ConstantClock(0.01, first_step_s=5.0)  # a slow first step (compile) does not count as warm-up time
    warm = warm_up(lambda: None, clock, TimingRules(warmup_steps=2, warmup_s=0.5))
    assert warm.first_step_s == 5.0
    assert warm.seconds - warm.first_step_s >= 0.5 and warm.steps >= 51


def test_warmup_brings_a_cold_device_to_speed_before_timing():
    clock = RampClock(cold_s=0.02, hot_s=0.01, ramp_s=1.0)
    m = time_callable(lambda: None, clock, TimingRules(warmup_steps=5, warmup_s=1.0, min_steps=20, min_time_s=1.0))
    assert m.warmup_s >= 1.0 and m.total_s >= 1.0
    assert m.median_s == 0.01  # every timed step is a hot one


def test_first_timed_chunk_is_sized_from_the_warmup():
    clock = RampClock(cold_s=0.001, hot_s=0.001, ramp_s=0.0)
    time_callable(lambda: None, clock, TimingRules(warmup_steps=2, min_steps=10, min_time_s=0.5))
    warmup_chunks, timed = clock.chunks[:2], clock.chunks[2:]
    assert warmup_chunks == [1, 1]
    assert timed == [500]  # one chunk reaches the minimum time: no host sync inside it


def test_min_time_adds_steps_beyond_min_steps():
    m = time_callable(lambda: time.sleep(0.01), HostClock(), TimingRules(warmup_steps=0, min_steps=2, min_time_s=0.06))
    assert m.steps >= 5 and m.total_s >= 0.06


def test_max_time_cuts_steps_but_keeps_the_floor():
    m = time_callable(lambda: None, ConstantClock(0.02), TimingRules(warmup_steps=0, min_steps=1000, max_time_s=0.01))
    assert m.steps == 3
    m = time_callable(lambda: None, ConstantClock(0.01), TimingRules(warmup_steps=0, min_steps=1000, max_time_s=0.05))
    assert m.steps == 5


@pytest.mark.parametrize("clock_kind", ["host-model", "cuda-events"])
def test_a_budget_bounds_warmup_and_timing_alike_on_every_clock(clock_kind):
    """The budget is honoured the same way on CUDA as on the CPU: warm-up and timed steps stop in time."""
    def clock():
        if clock_kind == "cuda-events":
            return CudaEventClock(torch.device("cuda", 0), cuda=FakeCuda())  # every event pair: 2 ms
        return ConstantClock(0.002)

    rules = TimingRules(warmup_steps=50, warmup_s=5.0, min_steps=500, min_time_s=5.0)
    m = time_callable(lambda: None, clock(), rules, budget_s=0.2)
    assert m.warmup_s + m.total_s <= 0.2 + 3 * 0.002 + 1e-9
    assert m.steps >= 3 and m.warmup_steps >= 1
    tiny = time_callable(lambda: None, clock(), rules, budget_s=0.0)
    assert tiny.warmup_steps == 1 and tiny.steps == 3  # the first call and the floor, nothing more


def test_without_an_estimate_one_step_sizes_the_chunks():
    clock = RampClock(cold_s=0.01, hot_s=0.01, ramp_s=0.0)
    m = time_steps(lambda: None, clock, TimingRules(min_steps=5, min_time_s=0.2))
    assert clock.chunks[0] == 1 and m.total_s >= 0.2


def test_median_reflects_the_callable():
    m = time_callable(lambda: time.sleep(0.02), HostClock(), TimingRules(warmup_steps=1, min_steps=5))
    assert 0.02 <= m.median_s < 0.2


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        TimingRules(min_steps=0)


def test_cuda_event_clock_records_on_the_chosen_device():
    cuda = FakeCuda()
    clock = CudaEventClock(torch.device("cuda", 3), cuda=cuda)
    times = clock.run(lambda: cuda.log.append(("step", cuda.current)), 2)
    assert times == [0.002, 0.002]
    records = [entry for kind, entry in cuda.log if kind == "record"]
    assert records == [(3, 3)] * 4  # on device 3's stream, inside device 3's context
    assert ("step", 3) in cuda.log and ("synchronize", 3) in cuda.log


# --------------------------------------------------------------------------------------------------
# TF32
# --------------------------------------------------------------------------------------------------

def tf32_everything():
    """Every TF32 setting torch keeps, new and legacy (None where torch refuses to read a legacy one)."""
    b = torch.backends

    def legacy(read):
        try:
            return read()
        except RuntimeError:
            return None

    return (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision,
            b.mkldnn.matmul.fp32_precision, legacy(torch.get_float32_matmul_precision),
            legacy(lambda: b.cuda.matmul.allow_tf32), legacy(lambda: b.cudnn.allow_tf32))


@pytest.fixture
def clean_tf32():
    """Put torch's TF32 settings back to its defaults after the test."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.fp32_precision = "none"


def test_precision_flags_are_explicit_and_restored(clean_tf32):
    before = tf32_everything()
    with precision_flags("tf32", torch.device("cpu")) as tf32:
        assert tf32 is False  # no TF32 on a CPU: the row must say so
    with precision_flags("fp32", torch.device("cuda")) as tf32:
        assert tf32 is False
        assert tf32_state() == {"matmul": "ieee", "cudnn_conv": "ieee"}  # cuDNN's TF32 default is off too
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    with precision_flags("tf32", torch.device("cuda")) as tf32:
        assert tf32 is True and tf32_state() == {"matmul": "tf32", "cudnn_conv": "tf32"}
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    assert tf32_everything() == before
    with pytest.raises(ValueError):
        with precision_flags("fp8", torch.device("cpu")):
            pass


def test_setting_only_the_new_api_would_trip_torchs_legacy_readers(clean_tf32):
    """Why the legacy values move in step: torch (and inductor, which reads allow_tf32) refuses a mix."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    with pytest.raises(RuntimeError, match="mix of"):
        _ = torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("user", ["high", "medium", "new-api-tf32", "legacy-cudnn-off"])
def test_a_users_tf32_choice_is_kept_and_never_mixed(clean_tf32, user):
    if user in ("high", "medium"):
        torch.set_float32_matmul_precision(user)
    elif user == "new-api-tf32":
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # new API alone: torch's legacy reader already refuses
    else:
        torch.backends.cudnn.allow_tf32 = False
    before = tf32_everything()
    for precision in ("fp32", "tf32"):
        with precision_flags(precision, torch.device("cuda")) as tf32:
            if user != "new-api-tf32":
                # Inside, the legacy readers that inductor uses agree with what runs.
                assert torch.backends.cuda.matmul.allow_tf32 is tf32
                assert torch.backends.cudnn.allow_tf32 is tf32
            assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if tf32 else "ieee")
            assert torch.backends.cudnn.conv.fp32_precision == ("tf32" if tf32 else "ieee")
        assert tf32_everything() == before


# --------------------------------------------------------------------------------------------------
# Overhead and CUDA
# --------------------------------------------------------------------------------------------------

def test_bench_harness_overhead(benchmark):
    """What the timing loop adds per timed step on top of a trivial model (nn.Identity).

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

    def harness() -> tuple[Measurement, float]:
        start = time.perf_counter()
        m = time_callable(lambda: model(x), HostClock(), TimingRules(warmup_steps=0, min_steps=steps, floor_steps=1))
        return m, (time.perf_counter() - start) / steps

    m, harness_per_step = benchmark(harness)
    bare = bare_per_step()
    benchmark.extra_info["bare_call_us"] = bare * 1e6
    benchmark.extra_info["harness_step_us"] = harness_per_step * 1e6
    benchmark.extra_info["overhead_per_step_us"] = (harness_per_step - bare) * 1e6
    assert m.steps == steps
    assert m.median_s <= harness_per_step * 10


@needs_cuda
def test_cuda_events_time_device_work():
    a = torch.randn(2048, 2048, device="cuda")
    m = time_callable(lambda: a @ a, CudaEventClock(torch.device("cuda")), TimingRules(warmup_steps=3, min_steps=10))
    assert m.steps >= 10
    assert 0 < m.median_s < 1.0


@needs_cuda
def test_cuda_min_time_is_reached_in_chunks():
    a = torch.randn(1024, 1024, device="cuda")
    m = time_callable(lambda: a @ a, CudaEventClock(torch.device("cuda")),
                      TimingRules(warmup_steps=2, min_steps=5, min_time_s=0.05))
    assert m.total_s >= 0.05 and m.steps > 5
