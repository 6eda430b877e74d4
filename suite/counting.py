"""Parameters (total, without head, by part) and multiply-accumulates (MACs) per image.

Convention, as in the papers and timm: only matrix products and convolutions are counted (norms,
activations, softmax, pooling excluded), one multiply-accumulate = one MAC, GFLOPs = 2 x GMACs.
Attention's QK^T and AV products are counted.

The primary count is fvcore's, with the handlers it lacks: timm's ViTs call
`scaled_dot_product_attention`, which fvcore skips without a word (ViT-B/16 loses 4% at 224),
and `baddbmm`. The same traced graph also gives what plain fvcore reports out of the box, so
the under-count is recorded beside our figure. Every count is cross-checked against
`torch.utils.flop_counter.FlopCounterMode`, which runs on the meta device.

fvcore traces with torch.jit, which cannot trace meta tensors; the model is therefore built on the
meta device and given uninitialised CPU storage (`to_empty`), which costs no initialisation time:
counting depends on shapes only, never on values.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from suite.zoo import ModelSpec, build_model, mixer_rule_used, mixer_token_dim

# fvcore calls torch.jit.script when imported, which torch>=2.9 flags as deprecated; the tracing
# fvcore counts with (torch.jit.trace) is unaffected.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------

#: Top-level attribute names that hold a model's stem (input embedding) in timm's families.
STEM_NAMES = frozenset({"stem", "patch_embed", "cls_token", "pos_embed", "reg_token", "conv1", "bn1",
                        "conv_stem"})
#: Top-level attribute names that hold a model's repeated blocks.
BLOCK_NAMES = frozenset({"blocks", "stages", "layer1", "layer2", "layer3", "layer4", "layers"})


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameters: total, without the classifier head (the paper's Table 1), and by part.

    Parts: `stem` (patch embedding / convolutional stem, class token, position embedding),
    `blocks` (the repeated stages), `head` (the classifier timm's `get_classifier()` returns) and
    `other` (what sits between, e.g. the final norm or EfficientNet's 1x1 head conv). They sum to the total.
    """
    head_ids = {id(p) for p in _classifier(model).parameters()}
    parts = Counter({"stem": 0, "blocks": 0, "head": 0, "other": 0})
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=True):
        if id(param) in seen:
            continue
        seen.add(id(param))
        top = name.split(".", 1)[0]
        if id(param) in head_ids:
            part = "head"
        elif top in STEM_NAMES:
            part = "stem"
        elif top in BLOCK_NAMES:
            part = "blocks"
        else:
            part = "other"
        parts[part] += param.numel()
    total = sum(parts.values())
    return {
        "params": total,
        "params_no_head": total - parts["head"],
        "params_stem": parts["stem"],
        "params_blocks": parts["blocks"],
        "params_head": parts["head"],
        "params_other": parts["other"],
    }


def _classifier(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Module) else nn.Identity()


# --------------------------------------------------------------------------------------------------
# fvcore handlers
# --------------------------------------------------------------------------------------------------

def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError("operand without a known shape")
    return shape


def sdpa_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of `aten::scaled_dot_product_attention`: QK^T (N x M x d) plus AV (N x M x d_v) per head."""
    q, k, v = (_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m = k[-2]
    dv = v[-1]
    return math.prod(batch) * n * m * (d + dv)


def baddbmm_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of `aten::baddbmm(bias, a, b)`: the batched product a @ b (the bias add is not a MAC)."""
    a, b = _shape(inputs[1]), _shape(inputs[2])
    return math.prod(a) * b[-1]


def matmul_handles() -> dict[str, Any]:
    """The suite's op handlers: fvcore's matmul/conv handlers plus the ones it lacks."""
    from fvcore.nn import jit_handles as h

    return {
        "aten::addmm": h.addmm_flop_jit,
        "aten::bmm": h.bmm_flop_jit,
        "aten::baddbmm": baddbmm_macs_jit,
        "aten::_convolution": h.conv_flop_jit,
        "aten::einsum": h.einsum_flop_jit,
        "aten::matmul": h.matmul_flop_jit,
        "aten::mm": h.matmul_flop_jit,
        "aten::linear": h.linear_flop_jit,
        "aten::scaled_dot_product_attention": sdpa_macs_jit,
    }


def plain_fvcore_handles() -> dict[str, Any]:
    """The handlers plain `fvcore.nn.FlopCountAnalysis` uses out of the box (norms and pooling included)."""
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    return dict(_DEFAULT_SUPPORTED_OPS)


def _keyed(op: str, handle: Any) -> Any:
    """Wrap a handler so its count is filed under the full op name (fvcore files conv under 'conv')."""

    def counted(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        value = handle(inputs, outputs)
        return Counter({op: int(sum(value.values()) if isinstance(value, Mapping) else value)})

    return counted


# --------------------------------------------------------------------------------------------------
# MACs
# --------------------------------------------------------------------------------------------------

@dataclass
class MacCount:
    """One model's MACs per image, by counter, with what was left uncounted."""

    macs: int
    macs_fvcore_plain: int
    macs_flop_counter: int | None
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)

    @property
    def flop_counter_rel_diff(self) -> float | None:
        """(FlopCounterMode - ours) / ours; 0.0 when the two counters agree exactly."""
        if self.macs_flop_counter is None or self.macs == 0:
            return None
        return (self.macs_flop_counter - self.macs) / self.macs


def fvcore_macs(model: nn.Module, img_size: int) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """Trace once with fvcore; return (ours, plain fvcore, ours by operator, unsupported ops).

    One trace serves both counts: every op either handler set knows is counted under its full name,
    then our total sums the matmul/conv ops and plain fvcore's sums the ops it handles by default.
    `model` must live on a real device (torch.jit cannot trace meta tensors).
    """
    from fvcore.nn.jit_analysis import JitModelAnalysis

    ours_ops, plain_ops = matmul_handles(), plain_fvcore_handles()
    handles = {op: _keyed(op, handle) for op, handle in {**plain_ops, **ours_ops}.items()}
    analysis = JitModelAnalysis(model, (torch.zeros(1, 3, img_size, img_size),)).set_op_handle(**handles)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        by_op = dict(analysis.by_operator())
        unsupported = dict(analysis.unsupported_ops())
    ours = {op: n for op, n in by_op.items() if op in ours_ops}
    plain = sum(n for op, n in by_op.items() if op in plain_ops)
    return sum(ours.values()), plain, ours, unsupported


def flop_counter_macs(model: nn.Module, img_size: int) -> int:
    """MACs per image from torch's FlopCounterMode (which counts FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, img_size, img_size, device=device))
    return counter.get_total_flops() // 2


def count_model_macs(meta_model: nn.Module, img_size: int, cross_check: bool = True) -> MacCount:
    """Count MACs per image of a meta-device model with fvcore (+ handlers) and FlopCounterMode.

    FlopCounterMode runs on the meta model first; the model is then given uninitialised CPU storage
    (`to_empty`, in place, no initialiser runs) for fvcore's jit trace.
    """
    counter_macs = flop_counter_macs(meta_model, img_size) if cross_check else None
    model = meta_model.to_empty(device="cpu")
    ours, plain, by_op, unsupported = fvcore_macs(model, img_size)
    mac_like = {op: n for op, n in unsupported.items() if any(k in op for k in ("mm", "conv", "attention", "einsum"))}
    return MacCount(macs=ours, macs_fvcore_plain=plain, macs_flop_counter=counter_macs, by_operator=by_op,
                    unsupported_ops=mac_like)


def macs_per_image(spec: ModelSpec, img_size: int | None = None, mixer_rule: str = "paper") -> int:
    """MACs per image of `spec` at `img_size`, fast: FlopCounterMode on the meta device.

    This is the cross-check counter of :func:`count_model_macs`; the tests pin it equal to the fvcore
    count, and `python -m suite.flops` records any disagreement for every model it counts.
    """
    size = int(img_size or spec.img_size)
    return flop_counter_macs(build_model(spec, img_size=size, mixer_rule=mixer_rule, device="meta"), size)


# --------------------------------------------------------------------------------------------------
# Closed forms (the ground truth the tests pin)
# --------------------------------------------------------------------------------------------------

def closed_form_macs(spec: ModelSpec, img_size: int | None = None, mixer_rule: str = "paper",
                     num_classes: int = 1000) -> int | None:
    """MACs by formula for isotropic Mixer and ViT; None for families without a closed form here.

    Mixer: patch embedding S*P^2*3*C, per layer token MLP 2*C*S*D_S and channel MLP 2*S*C*D_C, head C*K.
    ViT: patch embedding, per layer QKV 3NC^2 + QK^T N^2C + AV N^2C + projection NC^2 + MLP 2N*C*D,
    head C*K, with N = patches + 1 class token.
    """
    arch = spec.arch_dict
    size = int(img_size or spec.img_size)
    kind = arch.get("kind")
    if kind not in ("mixer", "vit"):
        return None
    patch, layers, c = arch["patch"], arch["layers"], arch["hidden"]
    patches = (size // patch) ** 2
    embed = patches * patch * patch * 3 * c
    head = c * num_classes
    if kind == "mixer":
        ds = mixer_token_dim(spec, size, mixer_rule)
        per_layer = 2 * c * patches * ds + 2 * patches * c * arch["channel_dim"]
    else:
        n = patches + 1
        per_layer = 4 * n * c * c + 2 * n * n * c + 2 * n * c * arch["mlp_dim"]
    return embed + layers * per_layer + head


def count_row(spec: ModelSpec, img_size: int | None = None, mixer_rule: str = "paper",
              cross_check: bool = True, num_classes: int = 1000) -> dict[str, Any]:
    """Everything `python -m suite.flops` writes for one model at one resolution."""
    size = int(img_size or spec.img_size)
    start = time.perf_counter()
    meta_model = build_model(spec, img_size=size, num_classes=num_classes, mixer_rule=mixer_rule, device="meta")
    params = count_params(meta_model)
    macs = count_model_macs(meta_model, size, cross_check=cross_check)
    closed = closed_form_macs(spec, size, mixer_rule, num_classes)
    return {
        "model": spec.name,
        "group": spec.group,
        "family": spec.family,
        "timm_name": spec.timm_name or "",
        "build": spec.build_source,
        "img_size": size,
        "mixer_rule": mixer_rule_used(spec, size, mixer_rule),
        "token_dim": mixer_token_dim(spec, size, mixer_rule) if spec.is_mixer else "",
        "num_classes": num_classes,
        **params,
        "macs": macs.macs,
        "gmacs": macs.macs / 1e9,
        "gflops": 2 * macs.macs / 1e9,
        "macs_fvcore_plain": macs.macs_fvcore_plain,
        "fvcore_plain_rel_diff": (macs.macs_fvcore_plain - macs.macs) / macs.macs if macs.macs else "",
        "macs_flop_counter": "" if macs.macs_flop_counter is None else macs.macs_flop_counter,
        "flop_counter_rel_diff": "" if macs.flop_counter_rel_diff is None else macs.flop_counter_rel_diff,
        "macs_closed_form": "" if closed is None else closed,
        "uncounted_ops": ";".join(f"{op}x{n}" for op, n in sorted(macs.unsupported_ops.items())),
        "macs_by_op": ";".join(f"{op}={n}" for op, n in sorted(macs.by_operator.items())),
        "count_seconds": round(time.perf_counter() - start, 2),
        "note": spec.note,
    }


def summarize_disagreements(rows: list[Mapping[str, Any]], tolerance: float = 1e-9) -> list[str]:
    """One line per model whose FlopCounterMode count differs from ours by more than `tolerance`."""
    lines = []
    for row in rows:
        diff = row.get("flop_counter_rel_diff")
        if isinstance(diff, float) and abs(diff) > tolerance:
            lines.append(f"{row['model']} @ {row['img_size']}: FlopCounterMode differs by {diff:+.2%}")
    return lines
