"""The zoo: every model of the lineup builds, names resolve as documented, Mixer follows Appendix C."""

from __future__ import annotations

from importlib import resources

import pandas as pd
import pytest
import timm
import torch

from suite import zoo
from suite.counting import count_params


@pytest.mark.parametrize("name", zoo.names())
def test_every_model_builds_on_meta(name: str) -> None:
    spec = zoo.get_spec(name)
    model = zoo.build_model(spec, device="meta")
    assert spec.family in zoo.FAMILIES and spec.group in zoo.GROUPS
    assert next(model.parameters()).device.type == "meta"
    with torch.no_grad():
        out = model(torch.empty(2, 3, spec.img_size, spec.img_size, device="meta"))
    assert tuple(out.shape) == (2, 1000)
    assert not model.training


def test_pretrained_tags_exist_in_timm() -> None:
    known = set(timm.list_pretrained())
    for spec in zoo.REGISTRY.values():
        if spec.pretrained_tag:
            assert spec.pretrained_tag in known, spec.name
            assert spec.pretrained_tag.split(".")[0] == spec.timm_name, spec.name


def test_unregistered_variants_are_built_from_timm_classes() -> None:
    built = {s.name for s in zoo.REGISTRY.values() if s.factory is not None}
    assert {"Mixer-H/14", "BiT-R152x1", "BiT-R200x3", "R50+Mixer-B/16", "R26+Mixer-S/32"} <= built
    for name in built:
        assert zoo.get_spec(name).pretrained_tag is None


def test_mixer_table1_parameters_match_the_paper() -> None:
    paper = pd.read_csv(resources.files("suite.paper").joinpath("mixer_table1_specs.csv"))
    assert len(paper) == 7
    for row in paper.itertuples():
        spec = zoo.get_spec(row.model)
        arch = spec.arch_dict
        assert (arch["patch"], arch["layers"], arch["hidden"]) == (row.patch, row.layers, row.hidden_c)
        assert (arch["token_dim"], arch["channel_dim"]) == (row.mlp_dim_ds, row.mlp_dim_dc)
        params = count_params(zoo.build_model(spec, device="meta"))
        assert round(params["params_no_head"] / 1e6) == row.params_m_no_head, row.model


def test_mixer_at_448_follows_appendix_c() -> None:
    spec = zoo.get_spec("Mixer-B/16")
    paper = zoo.build_model(spec, img_size=448, device="meta")
    fixed = zoo.build_model(spec, img_size=448, mixer_rule="fixed", device="meta")
    # S grows 196 -> 784 (K = 2), so D_S grows 384 -> 4 * 384 = 1536 under the paper's rule.
    assert tuple(paper.blocks[0].mlp_tokens.fc1.weight.shape) == (1536, 784)
    assert tuple(fixed.blocks[0].mlp_tokens.fc1.weight.shape) == (384, 784)
    assert zoo.mixer_rule_used(spec, 448, "paper") == "paper"
    assert zoo.mixer_rule_used(spec, 224, "paper") == "native"
    assert zoo.mixer_rule_used(zoo.get_spec("ViT-B/16"), 448) == ""
    h14 = zoo.build_model(zoo.get_spec("Mixer-H/14"), img_size=448, device="meta")
    assert tuple(h14.blocks[0].mlp_tokens.fc1.weight.shape) == (2560, 1024)


def test_conv_stem_mixer_runs_and_keeps_the_token_count() -> None:
    spec = zoo.get_spec("R26+Mixer-S/32")
    assert zoo.build_model(spec, device="meta").blocks[0].mlp_tokens.fc1.weight.shape[1] == 49
    model = zoo.build_model(spec, img_size=96, num_classes=7)  # stride 32: a 3 x 3 token grid
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, 7)
    assert model.blocks[0].mlp_tokens.fc1.weight.shape[1] == 9


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Mixer-B/16", ["Mixer-B/16"]),
        ("mixer-b/16", ["Mixer-B/16"]),
        ("ViT-*/32", ["ViT-B/32", "ViT-L/32"]),
        ("hybrid", ["R+ViT-Ti/16", "R26+ViT-S/32", "R50+ViT-B/16", "R26+Mixer-S/32", "R50+Mixer-B/16"]),
        ("vit_base_patch16_224", ["ViT-B/16"]),
        ("Mixer-S/32, Mixer-S/32,ViT-S/16", ["Mixer-S/32", "ViT-S/16"]),
    ],
)
def test_resolve_models(expression: str, expected: list[str]) -> None:
    assert [s.name for s in zoo.resolve_models(expression)] == expected


def test_resolve_groups_and_families_cover_the_lineup() -> None:
    assert len(zoo.resolve_models("all")) == len(zoo.REGISTRY)
    assert {s.name for s in zoo.resolve_models("mixer")} == {n for n in zoo.names() if n.startswith("Mixer-")}
    assert len(zoo.resolve_models("vit")) == 6
    assert len(zoo.resolve_models("bit")) == 10
    assert all(s.family == "conv" for s in zoo.resolve_models("conv"))


def test_raw_timm_names_work() -> None:
    spec = zoo.get_spec("resnet18")
    assert spec.timm_name == "resnet18" and spec.family == "conv" and spec.group == "timm"
    tagged = zoo.get_spec("vit_base_patch16_224.augreg_in21k")
    assert tagged.name == "ViT-B/16" and tagged.pretrained_tag == "vit_base_patch16_224.augreg_in21k"


@pytest.mark.parametrize("bad", ["Mixer-B/17", "vit_bas_patch16_224", "nonsense*pattern", ""])
def test_unknown_names_suggest_close_ones(bad: str) -> None:
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.resolve_models(bad)
    message = str(info.value)
    assert "\n" not in message
    if bad == "Mixer-B/17":
        assert "Mixer-B/16" in message
    if bad == "vit_bas_patch16_224":
        assert "vit_base_patch16_224" in message
