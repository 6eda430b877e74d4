"""Non-dominated sets: which models no other model beats on every axis at once.

The paper draws its accuracy/compute frontier as a dashed line through the models that no other
model beats on both axes. Here a point is *dominated* when another point is at least as good on
every objective and strictly better on at least one. So exact duplicates do not dominate each other
(both stay on the frontier), a point with a NaN coordinate is neither on the frontier nor able to
push any other point off it, and a single point is its own frontier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

Sense = Literal["max", "min"]

#: Rows compared against all others at once; bounds the n x chunk boolean work arrays.
_CHUNK = 1024


def non_dominated(points: np.ndarray | Sequence[Sequence[float]], senses: Sequence[Sense]) -> np.ndarray:
    """Boolean mask of the rows of `points` (n x k) that no other row dominates.

    `senses[j]` says whether objective j is to be maximised ("max") or minimised ("min").
    Rows with any NaN are never on the frontier and never dominate another row.
    """
    values = np.asarray(points, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n points x k objectives), got shape {values.shape}")
    if len(senses) != values.shape[1]:
        raise ValueError(f"{len(senses)} senses given for {values.shape[1]} objectives")
    bad = [s for s in senses if s not in ("max", "min")]
    if bad:
        raise ValueError(f"each sense must be 'max' or 'min', got {bad[0]!r}")
    signs = np.array([1.0 if s == "max" else -1.0 for s in senses])
    scores = values * signs
    valid = ~np.isnan(scores).any(axis=1)
    candidates = scores[valid]
    keep = np.zeros(len(values), dtype=bool)
    if len(candidates) == 0:
        return keep
    dominated = np.zeros(len(candidates), dtype=bool)
    for start in range(0, len(candidates), _CHUNK):
        block = candidates[start:start + _CHUNK]
        # other[j] >= block[i] on every objective, and > on at least one.
        at_least = (candidates[None, :, :] >= block[:, None, :]).all(axis=2)
        better = (candidates[None, :, :] > block[:, None, :]).any(axis=2)
        dominated[start:start + _CHUNK] = (at_least & better).any(axis=1)
    keep[np.flatnonzero(valid)] = ~dominated
    return keep


def pareto_mask(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                x_sense: Sense = "max", y_sense: Sense = "max") -> np.ndarray:
    """The two-objective case: mask of the points (x[i], y[i]) on the frontier."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {x.shape} and {y.shape}")
    return non_dominated(np.column_stack([x, y]), (x_sense, y_sense))


def frontier_mask(frame: pd.DataFrame, objectives: Mapping[str, Sense]) -> pd.Series:
    """Mask (aligned with `frame.index`) of the rows on the frontier of the named columns."""
    missing = [c for c in objectives if c not in frame.columns]
    if missing:
        raise KeyError(f"no column(s) {', '.join(missing)} to compute a frontier on")
    values = frame[list(objectives)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return pd.Series(non_dominated(values, list(objectives.values())), index=frame.index, name="on_frontier")


def throughput_accuracy_frontier(frame: pd.DataFrame, throughput: str = "images_per_sec",
                                 accuracy: str = "accuracy") -> pd.Series:
    """Frontier of the paper's Figure 2/3 kind: faster and more accurate are both better."""
    return frontier_mask(frame, {throughput: "max", accuracy: "max"})


def cost_accuracy_frontier(frame: pd.DataFrame, cost: str = "gmacs", accuracy: str = "accuracy") -> pd.Series:
    """Frontier of cost against quality: fewer GMACs and higher accuracy are both better."""
    return frontier_mask(frame, {cost: "min", accuracy: "max"})
