"""What a model learned, as arrays: the MLP-Mixer paper's Figures 4-6 and their ViT and ResNet counterparts.

Pure functions from a model's weights to numpy arrays, so that a planted structure (a bump at a
known token, a grating in a known filter) can be checked exactly. Drawing and writing files is
`suite.inspect`'s job.

- Token-mixing units (Figures 4, 5): the first token-mixing layer of each Mixer block,
  `blocks[i].mlp_tokens.fc1.weight` of shape (D_S, S), is D_S hidden units each with one weight
  per input token; a unit reshaped to the token grid (row-major, as timm flattens patches) is a
  √S×√S image.
- Locality: for one unit with weights w_t at token positions p_t (row, column, in patches), the
  weight mass m_t = |w_t| / Σ|w|, its centre c = Σ m_t p_t and its spread Σ m_t ‖p_t − c‖: the
  mean distance, in patches, of the unit's weight mass from its centre. A unit that looks at one
  token has spread 0; a unit with equal weight everywhere has :func:`uniform_spread` (5.35 patches
  on a 14×14 grid). A block's locality is the mean spread of its units.
- Opposite-phase pairs: greedily, over all pairs of units, the pair whose L2-normalised weights
  have the most negative cosine similarity (the paper's "closest inverse") is paired first, then
  the most negative among the units left, and so on; pairs are shown side by side, lowest spatial
  frequency first (the paper's Appendix D sorts "low frequency filters first").
- Patch embedding (Figure 6): the P×P×3 filters of a linear patch projection (a Conv2d on pixels
  whose kernel equals its stride): Mixer's `stem.proj`, ViT's `patch_embed.proj`.
- Position embedding (the ViT paper's Figure 7): the cosine similarity of each patch position's
  embedding with every other one, prefix (class) tokens left out.
- First convolution: the first Conv2d that reads the 3 input channels (BiT's `stem.conv`,
  ResNet's `conv1`, the stem of a hybrid), as the filters the convolution really applies
  (weight-standardised for BiT's StdConv2d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn


class MissingLayer(LookupError):
    """The model has no layer of the kind asked for; the message says why in one line."""


# --------------------------------------------------------------------------------------------------
# Finding the layers
# --------------------------------------------------------------------------------------------------

def _numpy(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def token_mixing_modules(model: nn.Module) -> list[nn.Linear]:
    """The first linear layer of every token-mixing MLP, in block order (timm's MixerBlock)."""
    layers = [block.mlp_tokens.fc1 for block in getattr(model, "blocks", [])
              if isinstance(getattr(getattr(block, "mlp_tokens", None), "fc1", None), nn.Linear)]
    if not layers:
        raise MissingLayer("no token-mixing MLP (blocks[i].mlp_tokens.fc1): not a Mixer")
    return layers


def token_grid(model: nn.Module, tokens: int) -> tuple[int, int]:
    """(rows, columns) of the token grid: the stem's `grid_size` when it has one, else √S×√S."""
    for name in ("stem", "patch_embed"):
        grid = getattr(getattr(model, name, None), "grid_size", None)
        if grid is not None and int(grid[0]) * int(grid[1]) == tokens:
            return int(grid[0]), int(grid[1])
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise MissingLayer(f"{tokens} tokens form no square grid and the stem names none")
    return side, side


def patch_embedding_module(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The linear patch projection of pixels, and its name: a Conv2d on 3 channels whose kernel is its stride."""
    for name in ("stem", "patch_embed"):
        proj = getattr(getattr(model, name, None), "proj", None)
        if isinstance(proj, nn.Conv2d):
            if proj.in_channels == 3 and tuple(proj.kernel_size) == tuple(proj.stride):
                return f"{name}.proj", proj
            raise MissingLayer(f"its patch embedding ({name}.proj) projects {proj.in_channels}-channel features "
                               f"of a convolutional stem, not pixels")
    if any(hasattr(getattr(model, name, None), "backbone") for name in ("stem", "patch_embed")):
        raise MissingLayer("its tokens come from a convolutional stem (backbone), not a linear projection of pixels")
    raise MissingLayer("no linear patch embedding (stem.proj or patch_embed.proj)")


def first_conv_module(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first Conv2d (in module order) that reads the 3 input channels, and its name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise MissingLayer("no convolution on the 3 input channels")


# --------------------------------------------------------------------------------------------------
# Token-mixing units and their locality
# --------------------------------------------------------------------------------------------------

def token_mixing_units(model: nn.Module) -> list[np.ndarray]:
    """Per block, the token-mixing hidden units as images: (D_S, rows, columns) float32 arrays."""
    weights = [_numpy(layer.weight) for layer in token_mixing_modules(model)]
    rows, cols = token_grid(model, weights[0].shape[1])
    return [w.reshape(w.shape[0], rows, cols) for w in weights]


def centres(images: np.ndarray) -> np.ndarray:
    """(U, 2) centre (row, column) of each unit's weight mass |w|; NaN for a unit whose weights are all 0."""
    mass = np.abs(images.astype(np.float64))
    total = mass.sum(axis=(1, 2))
    rows, cols = np.indices(images.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([(mass * rows).sum(axis=(1, 2)) / total, (mass * cols).sum(axis=(1, 2)) / total], axis=1)


def spreads(images: np.ndarray) -> np.ndarray:
    """(U,) mean distance, in grid steps, of each unit's weight mass from its centre (NaN for an all-zero unit)."""
    mass = np.abs(images.astype(np.float64))
    total = mass.sum(axis=(1, 2))
    centre = centres(images)
    rows, cols = np.indices(images.shape[1:])
    distance = np.hypot(rows[None] - centre[:, 0, None, None], cols[None] - centre[:, 1, None, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mass * distance).sum(axis=(1, 2)) / total


def locality(images: np.ndarray) -> float:
    """A block's locality: the mean spread of its units (0 = every unit looks at one token)."""
    values = spreads(images)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def uniform_spread(rows: int, cols: int) -> float:
    """The spread of a unit with equal weight on every token of a rows×cols grid: the far end of the scale."""
    return float(spreads(np.ones((1, rows, cols)))[0])


# --------------------------------------------------------------------------------------------------
# Opposite-phase pairs and the order of a grid
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arrangement:
    """The order in which units are drawn: opposite-phase pairs side by side, low frequencies first."""

    order: np.ndarray  # (U,) unit indices in drawing order; pairs at positions (0, 1), (2, 3), ...
    partner_cosine: np.ndarray  # (U,) cosine similarity of each unit with its partner (NaN: unpaired)

    @property
    def pairs(self) -> int:
        return int(np.isfinite(self.partner_cosine).sum() // 2)

    def opposite_pairs(self, threshold: float = -0.5) -> int:
        """Pairs whose cosine similarity is at most `threshold` (clearly of opposite phase)."""
        return int((self.partner_cosine <= threshold).sum() // 2)


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarity of the rows of `vectors` (0 for an all-zero row)."""
    flat = vectors.astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)
    return unit @ unit.T


def pair_opposites(units: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Greedy pairing by most negative cosine similarity over all pairs; (pairs (i < j), cosine matrix).

    With an odd number of units one is left unpaired. All-zero units have cosine 0 with every unit.
    """
    cosine = cosine_similarity(units.reshape(len(units), -1))
    first, second = np.triu_indices(len(units), k=1)
    paired = np.zeros(len(units), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for k in np.argsort(cosine[first, second], kind="stable"):
        i, j = int(first[k]), int(second[k])
        if not paired[i] and not paired[j]:
            paired[i] = paired[j] = True
            pairs.append((i, j))
            if len(pairs) == len(units) // 2:
                break
    return pairs, cosine


def spatial_frequency(units: np.ndarray) -> np.ndarray:
    """(U,) power-weighted mean radial frequency (cycles per grid step) of each unit's 2-D spectrum.

    `units` is (U, rows, columns) or (U, rows, columns, channels); channels' power is summed. A
    constant unit has frequency 0; an all-zero unit gets 0 too.
    """
    images = units.astype(np.float64)
    power = np.abs(np.fft.fft2(images, axes=(1, 2))) ** 2
    if power.ndim == 4:
        power = power.sum(axis=3)
    fy = np.fft.fftfreq(images.shape[1])[:, None]
    fx = np.fft.fftfreq(images.shape[2])[None, :]
    radius = np.hypot(fy, fx)
    total = power.sum(axis=(1, 2))
    return np.divide((power * radius).sum(axis=(1, 2)), total, out=np.zeros(len(units)), where=total > 0)


def arrange(units: np.ndarray) -> Arrangement:
    """Pair units of opposite phase (:func:`pair_opposites`) and order the pairs by mean spatial frequency.

    Within a pair the lower index comes first; an unpaired unit comes last. Pairs of equal frequency keep the
    order they were paired in (the most opposite first).
    """
    pairs, cosine = pair_opposites(units)
    frequency = spatial_frequency(units)
    pairs.sort(key=lambda pair: (frequency[pair[0]] + frequency[pair[1]]) / 2)
    paired = {i for pair in pairs for i in pair}
    order = [i for pair in pairs for i in pair] + [i for i in range(len(units)) if i not in paired]
    partner = np.full(len(units), np.nan)
    for i, j in pairs:
        partner[i] = partner[j] = cosine[i, j]
    order_array = np.asarray(order, dtype=np.int64)
    return Arrangement(order_array, partner[order_array])


# --------------------------------------------------------------------------------------------------
# Pixel filters and position embeddings
# --------------------------------------------------------------------------------------------------

def conv_filters(conv: nn.Conv2d) -> np.ndarray:
    """(U, k, k, 3) filters the convolution applies: its weight, weight-standardised for timm's StdConv2d.

    StdConv2d(Same) normalises each output filter to zero mean and unit (biased) variance with its
    `eps`; ScaledStdConv2d(Same) then multiplies by `gain * scale`. A plain Conv2d is taken as is.
    """
    weight = conv.weight.detach().double().cpu().numpy()
    kind = type(conv).__name__
    if kind.startswith(("StdConv2d", "ScaledStdConv2d")):
        flat = weight.reshape(len(weight), -1)
        flat = (flat - flat.mean(axis=1, keepdims=True)) / np.sqrt(flat.var(axis=1, keepdims=True) + conv.eps)
        if kind.startswith("ScaledStdConv2d"):
            flat = flat * (_numpy(conv.gain).reshape(-1, 1) * conv.scale)
        weight = flat.reshape(weight.shape)
    return weight.transpose(0, 2, 3, 1).astype(np.float32)


def position_embedding_parameter(model: nn.Module) -> tuple[nn.Parameter, int, tuple[int, int]]:
    """The learned position embedding, where its patch positions start (after prefix tokens), and their grid."""
    pos = getattr(model, "pos_embed", None)
    if not isinstance(pos, nn.Parameter) or pos.ndim != 3:
        raise MissingLayer("no learned position embedding (pos_embed)")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None:
        raise MissingLayer("its patch embedding names no grid (patch_embed.grid_size)")
    rows, cols = int(grid[0]), int(grid[1])
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    positions = pos.shape[1]
    if positions == rows * cols + prefix:
        return pos, prefix, (rows, cols)
    if positions == rows * cols:
        return pos, 0, (rows, cols)
    raise MissingLayer(f"pos_embed has {positions} positions for a {rows}×{cols} grid with {prefix} prefix tokens")


def position_embeddings(model: nn.Module) -> tuple[np.ndarray, tuple[int, int]]:
    """The (S, D) position embeddings of the patch positions (prefix tokens left out) and their grid."""
    pos, start, grid = position_embedding_parameter(model)
    return _numpy(pos[0, start:]), grid


def position_similarity(model: nn.Module) -> np.ndarray:
    """(rows, cols, rows, cols): [i, j] is the similarity map of position (i, j) with every other position."""
    embeddings, (rows, cols) = position_embeddings(model)
    return cosine_similarity(embeddings).reshape(rows, cols, rows, cols)


# --------------------------------------------------------------------------------------------------
# The pictures as arrays
# --------------------------------------------------------------------------------------------------

def signed_tiles(units: np.ndarray) -> np.ndarray:
    """Each unit divided by its own largest |weight|, so it spans [-1, 1] and 0 stays 0."""
    peak = np.abs(units).reshape(len(units), -1).max(axis=1).reshape((-1,) + (1,) * (units.ndim - 1))
    return np.divide(units, peak, out=np.zeros(units.shape, dtype=np.float64), where=peak > 0)


def rgb_tiles(filters: np.ndarray) -> np.ndarray:
    """(U, k, k, 3) filters as RGB in [0, 1]: 0.5 + 0.5 · w / max|w| per filter (grey is zero)."""
    return 0.5 + 0.5 * signed_tiles(filters)


def grid_columns(count: int, paired: bool = True) -> int:
    """Columns of a roughly 3:2 grid of `count` tiles; even when `paired`, so no pair breaks across rows."""
    columns = max(1, round(math.sqrt(1.5 * count)))
    if paired and columns % 2 and count > 1:
        columns += 1
    return min(columns, count + (count % 2 if paired else 0))


def mosaic(tiles: np.ndarray, columns: int, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """Tiles (N, h, w) or (N, h, w, C) laid out row by row in `columns`, `pad` pixels of `fill` around each."""
    count, height, width = tiles.shape[:3]
    rows = max(1, math.ceil(count / columns))
    shape = (rows * (height + pad) + pad, columns * (width + pad) + pad) + tiles.shape[3:]
    out = np.full(shape, fill, dtype=np.float64)
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        out[top:top + height, left:left + width] = tiles[index]
    return out


def tile_at(picture: np.ndarray, position: int, tile_shape: tuple[int, int], columns: int, pad: int = 1) -> np.ndarray:
    """The tile at `position` (in drawing order) of a :func:`mosaic`: how a reader finds one unit in a grid."""
    row, col = divmod(position, columns)
    top, left = pad + row * (tile_shape[0] + pad), pad + col * (tile_shape[1] + pad)
    return picture[top:top + tile_shape[0], left:left + tile_shape[1]]
