"""Comparing our order of models with the paper's: Spearman's rank correlation and the pairs that flip."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def spearman(ours: Sequence[float], paper: Sequence[float]) -> tuple[float, float]:
    """(rho, p-value); NaN for fewer than 3 models or a column without spread."""
    from scipy.stats import spearmanr

    if len(ours) < 3 or len(set(ours)) < 2 or len(set(paper)) < 2:
        return float("nan"), float("nan")
    result = spearmanr(list(ours), list(paper))
    return float(result.statistic), float(result.pvalue)


def discordant_pairs(ours: Sequence[float], paper: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (i, j) whose order here is the opposite of the paper's, i the larger here."""
    pairs = []
    for i, j in itertools.combinations(range(len(ours)), 2):
        if (ours[i] - ours[j]) * (paper[i] - paper[j]) < 0:
            pairs.append((i, j) if ours[i] > ours[j] else (j, i))
    return pairs
