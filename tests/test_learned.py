"""What a model learned, as arrays: locality at both ends of its scale, opposite-phase pairs, the order of a
grid, pixel filters as the convolution applies them, position-embedding similarity, and which layer each
architecture has (built on the meta device where only the structure matters)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suite import learned
from suite.zoo import build_conv_stem_mixer, build_mixer, build_model, get_spec


def bump(rows: int, cols: int, at: tuple[int, int], sigma: float) -> np.ndarray:
    r, c = np.indices((rows, cols))
    return np.exp(-((r - at[0]) ** 2 + (c - at[1]) ** 2) / (2 * sigma ** 2))


def grating(size: int, cycles: float, angle: float) -> np.ndarray:
    y, x = np.indices((size, size)) / size
    return np.cos(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)))


# --------------------------------------------------------------------------------------------------
# Locality
# --------------------------------------------------------------------------------------------------

def test_a_one_token_unit_has_spread_zero_and_its_centre_is_that_token():
    units = np.zeros((2, 7, 7))
    units[0, 2, 4] = -3.0
    units[1, 6, 0] = 0.1
    np.testing.assert_allclose(learned.spreads(units), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(learned.centres(units), [[2, 4], [6, 0]], atol=1e-12)
    assert learned.locality(units) == pytest.approx(0.0, abs=1e-12)


def test_uniform_weights_give_the_spread_of_the_uniform_distribution():
    assert learned.uniform_spread(2, 2) == pytest.approx(math.sqrt(0.5))
    assert learned.uniform_spread(3, 3) == pytest.approx((4 + 4 * math.sqrt(2)) / 9)
    signs = np.where(np.random.default_rng(0).random((5, 14, 14)) < 0.5, -1.0, 1.0)
    np.testing.assert_allclose(learned.spreads(signs), learned.uniform_spread(14, 14))
    assert learned.locality(np.ones((3, 14, 14))) == pytest.approx(learned.uniform_spread(14, 14))


def test_a_gaussian_bump_is_local_and_centred_where_it_was_planted():
    units = bump(14, 14, (3, 9), sigma=0.8)[None]
    # Not exactly 3: the grid's edge cuts the bump's tail off on one side.
    np.testing.assert_allclose(learned.centres(units), [[3, 9]], atol=1e-4)
    assert 0.5 < learned.spreads(units)[0] < 1.5 < learned.uniform_spread(14, 14)


def test_an_all_zero_unit_has_no_spread_and_does_not_count():
    units = np.zeros((2, 4, 4))
    units[1, 0, 0] = 1.0
    spread = learned.spreads(units)
    assert math.isnan(spread[0]) and spread[1] == 0.0
    assert learned.locality(units) == 0.0
    assert math.isnan(learned.locality(np.zeros((1, 4, 4))))


# --------------------------------------------------------------------------------------------------
# Opposite-phase pairs and drawing order
# --------------------------------------------------------------------------------------------------

def test_units_are_paired_with_their_inverse():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(3, 6, 6))
    units = np.stack([a, b, -a, c, -2 * b, -0.5 * c])
    pairs, cosine = learned.pair_opposites(units)
    assert sorted(pairs) == [(0, 2), (1, 4), (3, 5)]
    np.testing.assert_allclose([cosine[i, j] for i, j in pairs], -1.0)


def test_pairs_sit_side_by_side_lowest_frequency_first():
    high, low = grating(8, 3, 0.0), grating(8, 1, np.pi / 2)
    units = np.stack([high, low, -high, -low, np.ones((8, 8))])
    arrangement = learned.arrange(units)
    assert arrangement.order.tolist() == [1, 3, 0, 2, 4]
    np.testing.assert_allclose(arrangement.partner_cosine[:4], -1.0)
    assert math.isnan(arrangement.partner_cosine[4])
    assert arrangement.pairs == 2 and arrangement.opposite_pairs() == 2
    frequency = learned.spatial_frequency(units)
    assert frequency[4] == 0 and frequency[1] < frequency[0]


def test_the_grid_keeps_pairs_on_one_row_and_every_tile_can_be_found_again():
    assert all(learned.grid_columns(n) % 2 == 0 for n in (2, 3, 64, 196, 256, 384, 768))
    assert learned.grid_columns(384) == 24
    tiles = np.random.default_rng(2).normal(size=(11, 3, 5))
    picture = learned.mosaic(tiles, columns=4)
    assert picture.shape == (3 * 4 + 1, 4 * 6 + 1)
    for position in range(11):
        np.testing.assert_array_equal(learned.tile_at(picture, position, (3, 5), 4), tiles[position])
    assert np.isnan(learned.tile_at(picture, 11, (3, 5), 4)).all()


def test_tiles_are_scaled_to_their_own_peak():
    units = np.array([[[2.0, -4.0]], [[0.0, 0.0]]])
    np.testing.assert_array_equal(learned.signed_tiles(units), [[[0.5, -1.0]], [[0.0, 0.0]]])
    np.testing.assert_array_equal(learned.rgb_tiles(units), [[[0.75, 0.0]], [[0.5, 0.5]]])


# --------------------------------------------------------------------------------------------------
# Layers of each architecture
# --------------------------------------------------------------------------------------------------

def test_token_mixing_units_are_the_rows_of_fc1_over_the_token_grid():
    torch.manual_seed(0)
    model = build_mixer(patch_size=8, num_blocks=3, embed_dim=16, token_dim=10, channel_dim=16, img_size=48)
    units = learned.token_mixing_units(model)
    assert len(units) == 3 and units[0].shape == (10, 6, 6)
    weight = model.blocks[1].mlp_tokens.fc1.weight.detach().numpy()
    np.testing.assert_array_equal(units[1][4], weight[4].reshape(6, 6))
    # timm flattens the patch grid row by row: token t is patch (t // 6, t % 6).
    assert model.stem.grid_size == (6, 6)


def test_conv_filters_are_what_the_convolution_applies():
    from timm.layers import StdConv2d

    torch.manual_seed(0)
    for conv in (torch.nn.Conv2d(3, 4, 5, bias=False), StdConv2d(3, 4, 5, bias=False, eps=1e-8)):
        filters = learned.conv_filters(conv)
        assert filters.shape == (4, 5, 5, 3)
        x = torch.randn(2, 3, 9, 9)
        applied = F.conv2d(x, torch.from_numpy(filters).permute(0, 3, 1, 2), padding=conv.padding)
        torch.testing.assert_close(applied, conv(x).detach(), rtol=1e-4, atol=1e-4)


def test_position_similarity_skips_the_class_token():
    model = build_model(get_spec("test_vit"))
    rows, cols = model.patch_embed.grid_size
    dim = model.pos_embed.shape[-1]
    planted = torch.zeros(1, 1 + rows * cols, dim)
    planted[0, 0] = torch.randn(dim)
    for t in range(rows * cols):
        planted[0, 1 + t, t // cols] = 1.0
        planted[0, 1 + t, rows + t % cols] = 1.0
    with torch.no_grad():
        model.pos_embed.copy_(planted)
    similarity = learned.position_similarity(model)
    assert similarity.shape == (rows, cols, rows, cols)
    r, c = np.indices((rows, cols))
    np.testing.assert_allclose(similarity[2, 7], ((r == 2).astype(float) + (c == 7)) / 2, atol=1e-6)


def test_each_architecture_has_its_layers_and_says_which_it_lacks():
    with torch.device("meta"):
        stem_mixer = build_conv_stem_mixer(stem_layers=(1, 1, 1), stride=16, num_blocks=2, embed_dim=32, token_dim=16,
                                           channel_dim=32, img_size=64)
    hybrid_vit = build_model(get_spec("R+ViT-Ti/16"), device="meta")
    bit = build_model(get_spec("BiT-R50x1"), device="meta")
    resnet = build_model(get_spec("test_resnet"), device="meta")
    assert len(learned.token_mixing_modules(stem_mixer)) == 2
    with pytest.raises(learned.MissingLayer, match="convolutional stem"):
        learned.patch_embedding_module(stem_mixer)
    assert learned.first_conv_module(stem_mixer)[0] == "stem.backbone.stem.conv"
    with pytest.raises(learned.MissingLayer, match="projects 64-channel features"):
        learned.patch_embedding_module(hybrid_vit)
    assert learned.first_conv_module(bit)[0] == "stem.conv"
    assert learned.first_conv_module(resnet)[0] == "conv1.0"
    with pytest.raises(learned.MissingLayer, match="not a Mixer"):
        learned.token_mixing_modules(bit)
    with pytest.raises(learned.MissingLayer, match="position embedding"):
        learned.position_embeddings(resnet)
