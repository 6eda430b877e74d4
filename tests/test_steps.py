"""Tests of suite.steps: what a failure means, channels-last from what a model is made of, compile
status from dynamo's own counters, CUDA-graph capture on the chosen device (a fake torch.cuda)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

from suite.settings import Settings
from suite.steps import CompiledForward, capture_cuda_graph, channels_last_choice, classify_failure
from suite.zoo import build_model, get_spec
from tests.fakes import FakeCuda

CPU = torch.device("cpu")


@pytest.mark.parametrize("exc, status", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "oom"),
    (MemoryError(), "oom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"), "oom"),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), "oom"),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "oom"),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous "
                  "input."), "unsupported"),
    (RuntimeError("CUDA error: invalid configuration argument"), "invalid_config"),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "sticky"),
    (RuntimeError("CUDA error: unspecified launch failure"), "sticky"),
    (RuntimeError("CUDA error: device-side assert triggered"), "sticky"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"), "error"),
])
def test_what_a_failure_means(exc, status):
    assert classify_failure(exc) == status


@pytest.mark.parametrize("name, expected", [
    ("ViT-B/16", False), ("Mixer-B/16", False), ("BiT-R50x1", True), ("ResNet-50", True),
    ("R50+ViT-B/16", True), ("R26+Mixer-S/32", True), ("R+ViT-Ti/16", True), ("HaloNet-50", True),
    ("EfficientNet-L2", True),
])
def test_channels_last_auto_follows_what_the_model_is_made_of(name, expected):
    model = build_model(get_spec(name), device="meta")
    use, reason = channels_last_choice(model, "auto")
    assert use is expected
    assert reason.startswith("auto: ")
    assert channels_last_choice(model, "off") == (False, "off (asked for)")
    assert channels_last_choice(model, "on") == (True, "on (asked for)")


SETTINGS = Settings(device=CPU, compile=True, compile_backend="eager")


def test_a_compiled_forward_says_what_dynamo_compiled():
    compiled = CompiledForward(nn.Linear(4, 4), SETTINGS)
    compiled.first_call(torch.randn(2, 4), CPU)
    assert compiled.info.graphs == 1 and compiled.info.status == "compiled" and compiled.failed == ""
    assert compiled.info.seconds > 0


def test_a_forward_dynamo_will_not_compile_is_a_recorded_fallback():
    class Disabled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        @torch._dynamo.disable
        def forward(self, x):
            return self.linear(x)

    compiled = CompiledForward(Disabled(), SETTINGS)
    compiled.first_call(torch.randn(2, 4), CPU)
    assert compiled.info.status == "fallback: no graph compiled" and compiled.failed == "compile_fallback"


def test_a_recompile_limit_hit_is_a_recorded_fallback():
    with torch._dynamo.config.patch(recompile_limit=0):
        compiled = CompiledForward(nn.Linear(4, 4), SETTINGS)
        compiled.first_call(torch.randn(2, 4), CPU)
    assert compiled.info.status == "fallback: recompile limit hit" and compiled.failed == "compile_fallback"


def test_a_recompile_while_timed_is_recorded():
    compiled = CompiledForward(nn.Linear(4, 4), SETTINGS)
    compiled.first_call(torch.randn(2, 4), CPU)
    compiled.compiled(torch.randn(3, 4))  # a new shape while "timed": dynamo compiles again
    compiled.check_after_timing()
    assert compiled.failed == "compile_recompiled"


def test_graph_breaks_are_counted():
    class Breaks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            y = self.linear(x)
            torch._dynamo.graph_break()
            return self.linear(y)

    compiled = CompiledForward(Breaks(), SETTINGS)
    compiled.first_call(torch.randn(2, 4), CPU)
    assert compiled.info.graph_breaks >= 1 and compiled.info.status.startswith("compiled with")
    assert compiled.failed == ""


def test_cuda_graphs_are_captured_on_the_chosen_device():
    """--device cuda:2: the side stream, its warm-up, the capture and the replay all happen on device 2."""
    cuda = FakeCuda(current=0)
    calls = []
    replay = capture_cuda_graph(lambda: calls.append(cuda.current), torch.device("cuda", 2), cuda=cuda)
    assert calls == [2, 2, 2, 2]  # three warm-up calls and the captured one, all inside device 2's context
    streams = [entry for kind, entry in cuda.log if kind == "Stream"]
    assert streams and all(stream_device == 2 and current == 2 for stream_device, current in streams)
    captures = [entry for kind, entry in cuda.log if kind == "capture"]
    assert captures == [(2, 2)]  # the capture stream is device 2's, not device 0's default
    assert cuda.current == 0  # the caller's device is restored
    with cuda.device(torch.device("cuda", 2)):
        replay()
    assert ("replay", 2) in cuda.log
