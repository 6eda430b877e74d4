"""One measured step: the model made ready (memory format, precision, compile), its input, the
callable that is timed (a forward pass or the replay of its CUDA graph), and what a failure means.

- Channels-last (`auto`) is decided from what the model is made of: NHWC helps convolutions that
  look at neighbourhoods, so it is on when the model has any convolution other than a patchify
  one (kernel = stride, the patch embedding of Mixer and ViT), which covers BiT, the hybrids'
  ResNet stems, HaloNet and EfficientNet alike. The choice and its reason go into every row.
- torch.compile: dynamo caches compiled code per code object, so models of one class (every ViT
  shares `VisionTransformer.forward`) and batch sizes of one model would pile up cache entries
  until the recompile limit (8), after which dynamo silently runs eager; and a second batch size
  would recompile with a dynamic batch dimension. Every batch size of every model is therefore
  compiled anew and static (`torch._dynamo.reset()`, `dynamic=False`), and dynamo's own counters
  say whether it really compiled: a fall-back to eager, a recompile-limit hit or a recompile while
  timed becomes the row's status, never a silent `compile=True`.
- A training step (`--bench train`) is the paper's pre-training step on random labels; see TrainStep.
- CUDA graphs are captured on a stream of the chosen device, inside that device's context, so
  `--device cuda:N` captures the kernels it times (a capture stream on device 0 would record
  nothing while the kernels go to N).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from suite.settings import Settings
from suite.timing import LOW_PRECISION_DTYPES, synchronize

# --------------------------------------------------------------------------------------------------
# What a failure means
# --------------------------------------------------------------------------------------------------

#: Statuses that end a model's sweep like out-of-memory (larger batches would fail the same way).
ENDS_LIKE_OOM = ("oom", "unsupported", "invalid_config")

_OOM = ("out of memory", "can't allocate memory", "failed to allocate", "cublas_status_alloc_failed",
        "cudnn_status_alloc_failed")
_UNSUPPORTED = ("cudnn_status_not_supported",)
_INVALID_CONFIG = ("invalid configuration argument",)
#: CUDA errors after which the context is unusable: nothing on that device works again in this process.
_STICKY = ("illegal memory access", "unspecified launch failure", "device-side assert", "illegal instruction",
           "misaligned address", "uncorrectable ecc", "hardware stack error", "launch timed out",
           "an illegal instruction", "cudaerrorlaunchfailure")


class StickyCudaError(RuntimeError):
    """The CUDA context is dead (illegal access, device-side assert, ...): this process must end."""


def classify_failure(exc: BaseException) -> str:
    """'oom', 'unsupported', 'invalid_config', 'sticky' or 'error' for an exception raised by a step."""
    if isinstance(exc, StickyCudaError):
        return "sticky"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "oom"
    text = str(exc).lower()
    for status, patterns in (("sticky", _STICKY), ("oom", _OOM), ("unsupported", _UNSUPPORTED),
                             ("invalid_config", _INVALID_CONFIG)):
        if any(p in text for p in patterns):
            return status
    return "error"


def free_memory(device: torch.device) -> None:
    """Give back what a failed or finished model held (never called after a sticky error)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Making the model ready
# --------------------------------------------------------------------------------------------------

def _is_patchify(conv: nn.Conv2d) -> bool:
    """A patch embedding: non-overlapping, unpadded, kernel = stride > 1."""
    padding = conv.padding
    unpadded = padding == "valid" or (not isinstance(padding, str) and all(p == 0 for p in padding))
    return tuple(conv.kernel_size) == tuple(conv.stride) and max(conv.kernel_size) > 1 and unpadded


def channels_last_choice(model: nn.Module, rule: str) -> tuple[bool, str]:
    """Whether to run NHWC under `rule` (auto/on/off), and why (see the module docstring)."""
    if rule == "on":
        return True, "on (asked for)"
    if rule == "off":
        return False, "off (asked for)"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    spatial = [m for m in convs if not _is_patchify(m)]
    if spatial:
        return True, f"auto: {len(spatial)} of {len(convs)} convolutions are not patch embeddings"
    if convs:
        return False, "auto: only patch-embedding convolutions"
    return False, "auto: no convolution"


def prepare_model(model: nn.Module, settings: Settings, channels_last: bool) -> nn.Module:
    """Cast (pure low precision) and set the memory format, as the settings ask."""
    if settings.mode == "pure":
        model = model.to(LOW_PRECISION_DTYPES[settings.precision])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_input(batch: int, img_size: int, settings: Settings, channels_last: bool) -> torch.Tensor:
    """A random (never zero) image batch on the device, in the dtype and memory format the model takes."""
    dtype = LOW_PRECISION_DTYPES[settings.precision] if settings.mode == "pure" else torch.float32
    x = torch.randn(batch, 3, img_size, img_size, device=settings.device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(settings: Settings) -> contextlib.AbstractContextManager[Any]:
    if settings.mode != "autocast":
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.type, dtype=LOW_PRECISION_DTYPES[settings.precision],
                          cache_enabled=not settings.cuda_graphs)


# --------------------------------------------------------------------------------------------------
# torch.compile, watched
# --------------------------------------------------------------------------------------------------

def _dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    limit_hits = sum(n for key, n in counters["unimplemented"].items() if "recompile limit" in key.lower())
    return {"frames": int(counters["frames"]["ok"]), "graphs": int(counters["stats"]["unique_graphs"]),
            "breaks": int(sum(counters["graph_break"].values())), "limit": int(limit_hits)}


@dataclass
class CompileInfo:
    """What torch.compile did for one batch size: seconds of the first call, graphs, breaks, status."""

    seconds: float = 0.0
    frames: int = 0
    graphs: int = 0
    graph_breaks: int = 0
    status: str = "compiled"

    def columns(self) -> dict[str, Any]:
        return {"compile_s": self.seconds, "compile_frames": self.frames, "compile_graphs": self.graphs,
                "compile_graph_breaks": self.graph_breaks, "compile_status": self.status}


class CompiledForward:
    """`model` compiled afresh and static for one input; :meth:`check` reads dynamo's counters."""

    def __init__(self, model: nn.Module, settings: Settings) -> None:
        import torch._dynamo

        torch._dynamo.reset()
        mode = None if settings.compile_mode in ("", "default") else settings.compile_mode
        self.compiled = torch.compile(model, backend=settings.compile_backend, mode=mode, dynamic=False)
        self.before = _dynamo_counts()
        self.info = CompileInfo()
        self._after_first: dict[str, int] | None = None

    def first_call(self, x: torch.Tensor, device: torch.device) -> None:
        """Compile by calling once (timed, synchronised); the counters then say what was compiled."""
        start = time.perf_counter()
        self.compiled(x)
        synchronize(device)
        self.info.seconds = time.perf_counter() - start
        self._after_first = _dynamo_counts()
        delta = {k: self._after_first[k] - self.before[k] for k in self.before}
        self.info.frames, self.info.graphs, self.info.graph_breaks = delta["frames"], delta["graphs"], delta["breaks"]
        if delta["limit"]:
            self.info.status = "fallback: recompile limit hit"
        elif delta["graphs"] == 0:
            self.info.status = "fallback: no graph compiled"
        elif delta["breaks"]:
            self.info.status = f"compiled with {delta['breaks']} graph break(s)"

    def check_after_timing(self) -> None:
        """A recompile while timed means compile time sits inside the timed steps."""
        if self._after_first is None:
            return
        now = _dynamo_counts()
        if now["frames"] > self._after_first["frames"] or now["limit"] > self._after_first["limit"]:
            self.info.status = "recompiled while timed"

    @property
    def failed(self) -> str:
        """The row status this compile forces ('' when it really compiled)."""
        if self.info.status.startswith("fallback"):
            return "compile_fallback"
        if self.info.status == "recompiled while timed":
            return "compile_recompiled"
        return ""


# --------------------------------------------------------------------------------------------------
# A training step
# --------------------------------------------------------------------------------------------------

#: The training step's optimizer and clipping, as the paper pre-trains (Adam with weight decay,
#: gradients clipped at global norm 1); recorded in every training row.
TRAIN_LR = 1e-3
TRAIN_WEIGHT_DECAY = 0.1
TRAIN_CLIP_NORM = 1.0
TRAIN_RECIPE = (f"AdamW(lr={TRAIN_LR:g}, weight_decay={TRAIN_WEIGHT_DECAY:g}), cross-entropy on random labels, "
                f"global grad norm clipped at {TRAIN_CLIP_NORM:g}")


class TrainStep:
    """One timed training step: forward under the settings' precision (autocast, or pure weights),
    cross-entropy on random labels over the model's classes, backward (through a GradScaler for fp16
    autocast), clipping of the gradients' global norm at 1, an AdamW step. `zero_grad` is the clock's
    `between`: set_to_none, outside the timed region. `last_norm` is the norm before clipping."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 settings: Settings, num_classes: int) -> None:
        self.model, self.forward, self.x, self.settings = model.train(), forward, x, settings
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=TRAIN_LR, weight_decay=TRAIN_WEIGHT_DECAY)
        generator = torch.Generator(device=x.device).manual_seed(0)
        self.labels = torch.randint(0, num_classes, (x.shape[0],), device=x.device, generator=generator)
        fp16_autocast = settings.precision == "fp16" and settings.mode == "autocast"
        self.scaler = torch.amp.GradScaler(x.device.type) if fp16_autocast else None
        self.last_norm: torch.Tensor | None = None
        self._scales: list[torch.Tensor] = []

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def forget_skips(self) -> None:
        """Count skipped steps from here on (the warm-up's do not matter)."""
        self._scales = self._scales[-1:]

    @property
    def skipped_steps(self) -> int | None:
        """fp16: optimizer steps the GradScaler skipped (an overflow lowers the scale), which are cheaper
        than real ones; a row records how many of its timed steps were. None without a GradScaler."""
        if self.scaler is None:
            return None
        values = [float(s) for s in self._scales]
        return sum(1 for before, after in zip(values, values[1:]) if after < before)

    def __call__(self) -> None:
        with autocast(self.settings):
            logits = self.forward(self.x)
            loss = nn.functional.cross_entropy(logits.float(), self.labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self.last_norm = nn.utils.clip_grad_norm_(self.params, TRAIN_CLIP_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = getattr(self.scaler, "_scale", None)
            if scale is not None:
                self._scales.append(scale.detach().clone())  # on the device: no host sync in the step
            return
        loss.backward()
        self.last_norm = nn.utils.clip_grad_norm_(self.params, TRAIN_CLIP_NORM)
        self.optimizer.step()


# --------------------------------------------------------------------------------------------------
# CUDA graphs
# --------------------------------------------------------------------------------------------------

def capture_cuda_graph(forward: Callable[[], object], device: torch.device, cuda: Any = torch.cuda,
                       warmup: int = 3) -> Callable[[], object]:
    """Capture one `forward` in a CUDA graph on `device` and return its replay.

    Everything (the side stream, its warm-up, the capture stream) is made inside `device`'s context
    and on `device` explicitly; `cuda` is torch.cuda, or a fake that records the wiring in tests.
    """
    with cuda.device(device):
        side = cuda.Stream(device=device)
        side.wait_stream(cuda.current_stream(device))
        with cuda.stream(side):
            for _ in range(warmup):
                forward()
        cuda.current_stream(device).wait_stream(side)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph, stream=side):
            forward()
        cuda.current_stream(device).wait_stream(side)
    return graph.replay
