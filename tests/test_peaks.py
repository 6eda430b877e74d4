"""Tests of suite.peaks: the sustained and burst matmul peaks (with a fake clock) and datasheet figures."""

from __future__ import annotations

import pytest
import torch

from suite.peaks import datasheet_peak, measure_peak
from suite.telemetry import NvmlTelemetry
from tests.fakes import FakeNvml
from tests.test_timing import RampClock


def test_a_sustained_peak_is_the_median_after_a_second_of_load():
    # A GPU that bursts at boost clock for its first 0.5 s, then settles 20% slower under load.
    clock = RampClock(cold_s=0.010, hot_s=0.012, ramp_s=0.5)
    telemetry = NvmlTelemetry("handle", FakeNvml(clocks_mhz=[1830]), interval_s=0.01)
    peak = measure_peak(torch.device("cpu"), "bf16", clock, rule="sustained", telemetry=telemetry, size=64)
    assert peak.tflops == pytest.approx(2 * 64**3 / 0.012 / 1e12)  # the settled speed, not the burst
    assert peak.seconds >= 1.0 and "after 1." in peak.method and "median" in peak.method
    assert peak.sm_clock_mhz == 1830 and peak.power_w is not None
    burst = measure_peak(torch.device("cpu"), "bf16", RampClock(0.010, 0.012, 0.5), rule="burst", size=64)
    assert burst.tflops == pytest.approx(2 * 64**3 / 0.010 / 1e12)  # what the old harness reported
    assert burst.tflops > peak.tflops


def test_a_real_cpu_peak_is_positive():
    from suite.timing import HostClock

    peak = measure_peak(torch.device("cpu"), "fp32", HostClock(), rule="burst", size=256)
    assert peak.tflops > 0 and peak.steps >= 5


@pytest.mark.parametrize("name, precision, figure", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5), ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H200", "bf16", 989.5), ("NVIDIA H200", "fp32", 67.0), ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H100 NVL", "tf32", 417.5), ("NVIDIA A100-SXM4-80GB", "tf32", 156.0), ("NVIDIA L4", "bf16", 121.0),
])
def test_datasheet_peaks_of_known_gpus(name, precision, figure):
    assert datasheet_peak(name, precision)[0] == figure


def test_unknown_devices_have_no_datasheet_peak():
    assert datasheet_peak("AMD EPYC 7B13", "fp32") is None
    assert datasheet_peak("NVIDIA GeForce GTX 1080", "bf16") is None
