"""Tests of suite.telemetry with a fake NVML: clocks, temperature, power and energy over a window."""

from __future__ import annotations

import time

import pytest
import torch

from suite.telemetry import NullTelemetry, NvmlTelemetry, nvml_handle, telemetry_for
from tests.fakes import FakeNvml


def test_a_window_samples_clocks_and_reads_the_energy_counter():
    nvml = FakeNvml(clocks_mhz=[1980, 1755, 1755, 1740], watts=600.0)
    telemetry = NvmlTelemetry("handle", nvml, interval_s=0.01)
    with telemetry.window() as window:
        time.sleep(0.2)
    reading = window.result()
    assert reading.samples >= 4
    assert reading.sm_clock_min_mhz == 1740 and 1740 <= reading.sm_clock_mhz <= 1980
    assert reading.temperature_c >= 60
    assert reading.energy_j == pytest.approx(600.0 * reading.seconds, rel=0.1)
    assert reading.power_w == pytest.approx(600.0, rel=0.1)  # from the energy counter over the window
    columns = reading.columns()
    assert columns["telemetry"] == "nvml" and columns["energy_j"] == reading.energy_j


def test_without_an_energy_counter_power_is_the_mean_sample():
    nvml = FakeNvml(clocks_mhz=[1500], watts=300.0, no_energy=True)
    with NvmlTelemetry("handle", nvml, interval_s=0.01).window() as window:
        time.sleep(0.05)
    reading = window.result()
    assert reading.energy_j is None and reading.power_w == pytest.approx(300.0)


def test_the_cpu_has_no_telemetry_and_says_so():
    telemetry = telemetry_for(torch.device("cpu"))
    assert isinstance(telemetry, NullTelemetry)
    with telemetry.window() as window:
        pass
    reading = window.result()
    assert reading.source == "none (cpu)" and reading.sm_clock_mhz is None and reading.energy_j is None


def test_the_nvml_handle_follows_the_uuid_then_cuda_visible_devices(monkeypatch):
    nvml = FakeNvml(clocks_mhz=[1])
    assert nvml_handle(nvml, 0, "5e1f-aa") == ("uuid", "GPU-5e1f-aa")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert nvml_handle(nvml, 1, None) == ("index", 1)
    assert nvml_handle(nvml, 0, None) == ("index", 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert nvml_handle(nvml, 2, None) == ("index", 2)
