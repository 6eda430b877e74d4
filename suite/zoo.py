"""The model registry: the paper's model names mapped to how to build each one with timm.

Every model the MLP-Mixer paper compares is here under the paper's name ("Mixer-B/16", "ViT-L/16",
"BiT-R152x2", "R50+ViT-B/16"), with its family (mlp / attention / conv / hybrid), its native input
size and, where timm has one, the pretrained tag the few-shot harness loads. Where timm registers
no such variant (Mixer-H/14, BiT-R152x1, BiT-R200x3, Mixer with a convolutional stem) the model is
built from timm's own classes with the paper's hyper-parameters. Any raw timm model name works too.

Resolution rule for Mixer (the paper's Appendix C): when the image side grows by K with the patch
size fixed, the number of tokens S grows by K^2 and so does the token-mixing hidden width D_S.
timm instead keeps D_S fixed. `build_model(..., mixer_rule="paper")` follows the paper,
`mixer_rule="fixed"` follows timm, and :func:`mixer_rule_used` says which one a build applied.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import timm
import torch
from torch import nn

GROUPS = ("mixer", "vit", "bit", "hybrid", "context")
FAMILIES = ("mlp", "attention", "conv", "hybrid")
MIXER_RULES = ("paper", "fixed")


class UnknownModelError(ValueError):
    """A `--models` entry that names no known model; the message suggests the closest names."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model of the lineup, and what the paper calls it."""

    name: str
    group: str
    family: str
    img_size: int
    timm_name: str | None = None
    factory: Callable[..., nn.Module] | None = field(default=None, compare=False, repr=False)
    factory_kwargs: tuple[tuple[str, Any], ...] = ()
    pretrained_tag: str | None = None
    fixed_size: bool = False
    arch: tuple[tuple[str, Any], ...] = ()
    note: str = ""

    @property
    def arch_dict(self) -> dict[str, Any]:
        """Architecture hyper-parameters (patch, depth, widths) used by closed-form counts and tables."""
        return dict(self.arch)

    @property
    def build_source(self) -> str:
        """A short, human-readable statement of how the model is built."""
        if self.timm_name:
            return f"timm:{self.timm_name}"
        name = getattr(self.factory, "__name__", "factory")
        return f"suite.zoo.{name}({', '.join(f'{k}={v}' for k, v in self.factory_kwargs)})"

    @property
    def is_mixer(self) -> bool:
        return "mixer" in self.arch_dict.get("kind", "")


# --------------------------------------------------------------------------------------------------
# Builders for the variants timm does not register
# --------------------------------------------------------------------------------------------------

def build_mixer(*, patch_size: int, num_blocks: int, embed_dim: int, token_dim: int, channel_dim: int,
                img_size: int = 224, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """An MLP-Mixer from timm's MlpMixer with explicit D_S (token_dim) and D_C (channel_dim)."""
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(
        img_size=img_size, patch_size=patch_size, num_blocks=num_blocks, embed_dim=embed_dim,
        mlp_ratio=(_ratio(token_dim, embed_dim), _ratio(channel_dim, embed_dim)),
        num_classes=num_classes, **kwargs,
    )


def _ratio(hidden: int, dim: int) -> float:
    """An mlp_ratio that timm's `int(ratio * dim)` turns back into exactly `hidden`."""
    ratio = (hidden + 0.5) / dim
    assert int(ratio * dim) == hidden
    return ratio


def build_bit(*, layers: tuple[int, ...], width_factor: int, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """A BiT ResNet-v2 (GroupNorm + weight-standardized convs) from timm's ResNetV2, as timm builds BiT."""
    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    kwargs.pop("img_size", None)
    return ResNetV2(
        layers=list(layers), width_factor=width_factor, stem_type="fixed",
        conv_layer=partial(StdConv2d, eps=1e-8), num_classes=num_classes, **kwargs,
    )


def build_conv_stem_mixer(*, stem_layers: tuple[int, ...], stride: int, num_blocks: int, embed_dim: int,
                          token_dim: int, channel_dim: int, img_size: int = 224, num_classes: int = 1000,
                          **kwargs: Any) -> nn.Module:
    """Mixer blocks fed by a ResNet-v2 stem instead of the linear patch embedding.

    The stem is the one timm's R50+ViT / R26+ViT hybrids use (ResNet-v2, same-padding std-convs,
    no pre-activation), its feature map projected by a 1x1 conv to the Mixer width: every position of
    the stride-`stride` map is one token, so the token count equals that of a Mixer with patch `stride`.
    """
    from timm.layers import HybridEmbed, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2

    model = build_mixer(patch_size=stride, num_blocks=num_blocks, embed_dim=embed_dim, token_dim=token_dim,
                        channel_dim=channel_dim, img_size=img_size, num_classes=num_classes, **kwargs)
    backbone = ResNetV2(
        layers=list(stem_layers), num_classes=0, global_pool="", preact=False, stem_type="same",
        conv_layer=partial(StdConv2dSame, eps=1e-8),
    )
    stem = HybridEmbed(backbone, img_size=img_size, patch_size=1, embed_dim=embed_dim,
                       device=next(model.parameters()).device)
    if stem.num_patches != model.stem.num_patches:
        raise ValueError(f"stem gives {stem.num_patches} tokens, Mixer blocks expect {model.stem.num_patches}")
    model.stem = stem
    return model


# --------------------------------------------------------------------------------------------------
# The lineup
# --------------------------------------------------------------------------------------------------

def _mixer(name: str, patch: int, layers: int, dim: int, ds: int, dc: int, timm_name: str | None = None,
           tag: str | None = None) -> ModelSpec:
    arch = (("kind", "mixer"), ("patch", patch), ("layers", layers), ("hidden", dim),
            ("token_dim", ds), ("channel_dim", dc))
    if timm_name:
        return ModelSpec(name, "mixer", "mlp", 224, timm_name=timm_name, pretrained_tag=tag, fixed_size=True, arch=arch)
    return ModelSpec(
        name, "mixer", "mlp", 224, factory=build_mixer, fixed_size=True, arch=arch,
        factory_kwargs=(("patch_size", patch), ("num_blocks", layers), ("embed_dim", dim),
                        ("token_dim", ds), ("channel_dim", dc)),
        note="not registered in timm: built from timm's MlpMixer with the paper's Table 1 shape",
    )


def _vit(name: str, timm_name: str, patch: int, layers: int, dim: int, heads: int, tag: str | None) -> ModelSpec:
    arch = (("kind", "vit"), ("patch", patch), ("layers", layers), ("hidden", dim), ("heads", heads),
            ("mlp_dim", 4 * dim))
    return ModelSpec(name, "vit", "attention", 224, timm_name=timm_name, pretrained_tag=tag, fixed_size=True, arch=arch)


def _bit(depth: int, width: int, layers: tuple[int, ...], registered: bool) -> ModelSpec:
    name = f"BiT-R{depth}x{width}"
    arch = (("kind", "bit"), ("depth", depth), ("width_factor", width), ("layers", layers))
    if registered:
        timm_name = f"resnetv2_{depth}x{width}_bit"
        return ModelSpec(name, "bit", "conv", 224, timm_name=timm_name, pretrained_tag=f"{timm_name}.goog_in21k", arch=arch)
    return ModelSpec(
        name, "bit", "conv", 224, factory=build_bit, arch=arch,
        factory_kwargs=(("layers", layers), ("width_factor", width)),
        note="not registered in timm: built from timm's ResNetV2 exactly as timm builds BiT",
    )


def _hybrid_mixer(name: str, stem_layers: tuple[int, ...], stride: int, layers: int, dim: int, ds: int,
                  dc: int) -> ModelSpec:
    arch = (("kind", "conv-stem-mixer"), ("patch", stride), ("layers", layers), ("hidden", dim),
            ("token_dim", ds), ("channel_dim", dc), ("stem_layers", stem_layers))
    return ModelSpec(
        name, "hybrid", "hybrid", 224, factory=build_conv_stem_mixer, fixed_size=True, arch=arch,
        factory_kwargs=(("stem_layers", stem_layers), ("stride", stride), ("num_blocks", layers),
                        ("embed_dim", dim), ("token_dim", ds), ("channel_dim", dc)),
        note="Mixer blocks after a ResNet-v2 stem (the stem of timm's R+ViT hybrids); no library ships it",
    )


def _lineup() -> dict[str, ModelSpec]:
    specs = [
        _mixer("Mixer-S/32", 32, 8, 512, 256, 2048, "mixer_s32_224"),
        _mixer("Mixer-S/16", 16, 8, 512, 256, 2048, "mixer_s16_224"),
        _mixer("Mixer-B/32", 32, 12, 768, 384, 3072, "mixer_b32_224"),
        _mixer("Mixer-B/16", 16, 12, 768, 384, 3072, "mixer_b16_224", "mixer_b16_224.goog_in21k"),
        _mixer("Mixer-L/32", 32, 24, 1024, 512, 4096, "mixer_l32_224"),
        _mixer("Mixer-L/16", 16, 24, 1024, 512, 4096, "mixer_l16_224", "mixer_l16_224.goog_in21k"),
        _mixer("Mixer-H/14", 14, 32, 1280, 640, 5120),
        _vit("ViT-S/16", "vit_small_patch16_224", 16, 12, 384, 6, "vit_small_patch16_224.augreg_in21k"),
        _vit("ViT-B/32", "vit_base_patch32_224", 32, 12, 768, 12, "vit_base_patch32_224.augreg_in21k"),
        _vit("ViT-B/16", "vit_base_patch16_224", 16, 12, 768, 12, "vit_base_patch16_224.augreg_in21k"),
        _vit("ViT-L/32", "vit_large_patch32_224", 32, 24, 1024, 16, "vit_large_patch32_224.orig_in21k"),
        _vit("ViT-L/16", "vit_large_patch16_224", 16, 24, 1024, 16, "vit_large_patch16_224.augreg_in21k"),
        _vit("ViT-H/14", "vit_huge_patch14_224", 14, 32, 1280, 16, "vit_huge_patch14_224.orig_in21k"),
        _bit(50, 1, (3, 4, 6, 3), True),
        _bit(50, 2, (3, 4, 6, 3), False),
        _bit(50, 3, (3, 4, 6, 3), True),
        _bit(101, 1, (3, 4, 23, 3), True),
        _bit(101, 3, (3, 4, 23, 3), True),
        _bit(152, 1, (3, 8, 36, 3), False),
        _bit(152, 2, (3, 8, 36, 3), True),
        _bit(152, 4, (3, 8, 36, 3), True),
        _bit(200, 3, (3, 24, 36, 3), False),
        ModelSpec("ResNet-50", "bit", "conv", 224, timm_name="resnet50", pretrained_tag="resnet50.a1_in1k",
                  arch=(("kind", "resnet"),), note="plain ResNet-50 (BatchNorm), the usual baseline"),
        ModelSpec("R+ViT-Ti/16", "hybrid", "hybrid", 224, timm_name="vit_tiny_r_s16_p8_224",
                  pretrained_tag="vit_tiny_r_s16_p8_224.augreg_in21k", fixed_size=True,
                  arch=(("kind", "hybrid-vit"),)),
        ModelSpec("R26+ViT-S/32", "hybrid", "hybrid", 224, timm_name="vit_small_r26_s32_224",
                  pretrained_tag="vit_small_r26_s32_224.augreg_in21k", fixed_size=True,
                  arch=(("kind", "hybrid-vit"),)),
        ModelSpec("R50+ViT-B/16", "hybrid", "hybrid", 224, timm_name="vit_base_r50_s16_224",
                  pretrained_tag="vit_base_r50_s16_224.orig_in21k", fixed_size=True,
                  arch=(("kind", "hybrid-vit"),)),
        _hybrid_mixer("R26+Mixer-S/32", (2, 2, 2, 2), 32, 8, 512, 256, 2048),
        _hybrid_mixer("R50+Mixer-B/16", (3, 4, 9), 16, 12, 768, 384, 3072),
        ModelSpec("HaloNet-50", "context", "attention", 256, timm_name="halonet50ts",
                  pretrained_tag="halonet50ts.a1h_in1k", fixed_size=True, arch=(("kind", "halonet"),),
                  note="timm's HaloNet-50ts stands in for the paper's HaloNet-H4 (not in timm)"),
        ModelSpec("NFNet-F4", "context", "conv", 384, timm_name="dm_nfnet_f4", pretrained_tag="dm_nfnet_f4.dm_in1k",
                  arch=(("kind", "nfnet"),), note="the paper's NFNet-F4+ row; timm has the F4 weights"),
        ModelSpec("EfficientNet-L2", "context", "conv", 800, timm_name="tf_efficientnet_l2",
                  pretrained_tag="tf_efficientnet_l2.ns_jft_in1k", arch=(("kind", "efficientnet"),),
                  note="Noisy Student EfficientNet-L2 (backbone of the paper's MPL row)"),
    ]
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, ModelSpec] = _lineup()
#: The registry keyed by lower-case name, so paper names match case-insensitively.
_BY_LOWER: dict[str, ModelSpec] = {name.lower(): spec for name, spec in REGISTRY.items()}


# --------------------------------------------------------------------------------------------------
# Resolving --models
# --------------------------------------------------------------------------------------------------

def names() -> list[str]:
    """The paper names of the whole lineup, in registry order."""
    return list(REGISTRY)


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    return frozenset(timm.list_models())


def spec_from_timm(name: str) -> ModelSpec:
    """A spec for any timm model name (optionally with a pretrained tag, `arch.tag`)."""
    arch_name, _, tag = name.partition(".")
    if arch_name not in _timm_names():
        raise UnknownModelError(_unknown_message(name))
    for spec in REGISTRY.values():
        if spec.timm_name == arch_name:
            return spec if not tag else replace(spec, pretrained_tag=name)
    cfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(arch_name)
    img_size = int(cfg.input_size[-1]) if cfg is not None else 224
    module = timm.models.model_entrypoint(arch_name).__module__
    family = {"mlp_mixer": "mlp", "vision_transformer": "attention", "vision_transformer_hybrid": "hybrid",
              "byoanet": "attention", "swin_transformer": "attention", "deit": "attention",
              "eva": "attention", "beit": "attention"}.get(module.rsplit(".", 1)[-1], "conv")
    fixed = family in ("mlp", "attention", "hybrid")
    has_tag = bool(tag) or (cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file))
    return ModelSpec(
        name=name, group="timm", family=family, img_size=img_size, timm_name=arch_name,
        pretrained_tag=name if has_tag else None, fixed_size=fixed, arch=(("kind", "timm"),),
        note=f"raw timm model ({module.rsplit('.', 1)[-1]}); family guessed from its timm module",
    )


def get_spec(name: str) -> ModelSpec:
    """Look up one model by paper name (case-insensitive) or timm name."""
    spec = REGISTRY.get(name) or _BY_LOWER.get(name.lower())
    if spec is not None:
        return spec
    return spec_from_timm(name)


def _unknown_message(entry: str) -> str:
    by_lower = {name.lower(): name for name in [*names(), *GROUPS, *FAMILIES]}
    close = [by_lower[m] for m in difflib.get_close_matches(entry.lower(), list(by_lower), n=3, cutoff=0.5)]
    timm_close = difflib.get_close_matches(entry, sorted(_timm_names()), n=3, cutoff=0.7)
    hint = close[:3] + [t for t in timm_close if t not in close][:2]
    suggestion = f"; did you mean {', '.join(hint)}?" if hint else "; see python -m suite.zoo for the lineup"
    return f"unknown model {entry!r}{suggestion}"


def resolve_models(expression: str | Iterable[str]) -> list[ModelSpec]:
    """Turn a `--models` value into specs: all, groups, families, paper names, globs, timm names."""
    entries = expression.split(",") if isinstance(expression, str) else list(expression)
    entries = [e.strip() for e in entries if e and e.strip()]
    if not entries:
        raise UnknownModelError("no models given; try --models all")
    chosen: dict[str, ModelSpec] = {}
    for entry in entries:
        for spec in _resolve_one(entry):
            chosen.setdefault(spec.name, spec)
    return list(chosen.values())


def _resolve_one(entry: str) -> list[ModelSpec]:
    key = entry.lower()
    if key == "all":
        return list(REGISTRY.values())
    if key in GROUPS:
        return [s for s in REGISTRY.values() if s.group == key]
    if key in FAMILIES:
        return [s for s in REGISTRY.values() if s.family == key]
    if any(ch in entry for ch in "*?["):
        hits = [s for s in REGISTRY.values() if fnmatch.fnmatch(s.name.lower(), key)]
        if hits:
            return hits
        timm_hits = timm.list_models(entry)
        if timm_hits:
            return [spec_from_timm(n) for n in timm_hits]
        raise UnknownModelError(f"pattern {entry!r} matches no model; see python -m suite.zoo for the lineup")
    return [get_spec(entry)]


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------

def mixer_token_dim(spec: ModelSpec, img_size: int, rule: str = "paper") -> int:
    """D_S at `img_size`: scaled with the token count (paper, Appendix C) or kept fixed (timm)."""
    arch = spec.arch_dict
    base = arch["token_dim"]
    if rule == "fixed" or img_size == spec.img_size:
        return base
    tokens_native = (spec.img_size // arch["patch"]) ** 2
    tokens = (img_size // arch["patch"]) ** 2
    return max(1, round(base * tokens / tokens_native))


def mixer_rule_used(spec: ModelSpec, img_size: int, rule: str = "paper") -> str:
    """Which D_S rule a build of `spec` at `img_size` applied: 'native', 'paper' or 'fixed' ('' if not Mixer)."""
    if not spec.is_mixer:
        return ""
    if img_size == spec.img_size:
        return "native"
    return rule


def build_model(spec: ModelSpec, *, img_size: int | None = None, num_classes: int | None = 1000,
                pretrained: bool = False, mixer_rule: str = "paper", device: str | torch.device | None = None,
                ) -> nn.Module:
    """Build `spec` at `img_size` (default: native) with `num_classes` outputs, in eval mode.

    `device="meta"` builds without allocating weights, which is how counting handles the largest
    models. `num_classes=None` keeps the checkpoint's own head (useful with `pretrained=True`).
    """
    if mixer_rule not in MIXER_RULES:
        raise ValueError(f"mixer_rule must be one of {MIXER_RULES}, got {mixer_rule!r}")
    size = int(img_size or spec.img_size)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if spec.fixed_size and (size != spec.img_size or spec.factory is not None):
        kwargs["img_size"] = size
    if spec.is_mixer and size != spec.img_size:
        ds = mixer_token_dim(spec, size, mixer_rule)
        hidden = spec.arch_dict["hidden"]
        if spec.factory is not None:
            kwargs["token_dim"] = ds
        else:
            kwargs["mlp_ratio"] = (_ratio(ds, hidden), spec.arch_dict["channel_dim"] / hidden)
    context = torch.device(device) if device is not None else contextlib.nullcontext()
    with context:
        if spec.factory is not None:
            if pretrained:
                raise ValueError(f"{spec.name} has no pretrained weights in timm; use a local checkpoint")
            model = spec.factory(**{**dict(spec.factory_kwargs), **kwargs})
        else:
            name = spec.pretrained_tag if pretrained and spec.pretrained_tag else spec.timm_name
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """`python -m suite.zoo [--models ...]`: list the lineup and how each model is built."""
    from suite.cli import ArgumentParser, HelpFormatter, add_models_argument, fail

    parser = ArgumentParser(prog="python -m suite.zoo", formatter_class=HelpFormatter,
                            description="List the models of the lineup, their family and how each is built.")
    add_models_argument(parser)
    args = parser.parse_args(argv)
    try:
        specs = resolve_models(args.models)
    except UnknownModelError as exc:
        fail(parser.prog, str(exc))
    width = max(len(s.name) for s in specs)
    for s in specs:
        print(f"{s.name:<{width}}  {s.group:<8} {s.family:<9} {s.img_size:>4}  {s.build_source}"
              f"{'  pretrained=' + s.pretrained_tag if s.pretrained_tag else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
