"""The Pareto frontier: dominated points out, ties and duplicates kept, NaN ignored."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from suite.pareto import (
    cost_accuracy_frontier,
    frontier_mask,
    non_dominated,
    pareto_mask,
    throughput_accuracy_frontier,
)


def brute_force(points: np.ndarray, senses: list[str]) -> np.ndarray:
    """The definition, one pair at a time, to check the vectorised version against."""
    signs = np.array([1 if s == "max" else -1 for s in senses])
    scores = points * signs
    keep = []
    for i, p in enumerate(scores):
        if np.isnan(p).any():
            keep.append(False)
            continue
        beaten = any(
            not np.isnan(q).any() and (q >= p).all() and (q > p).any()
            for j, q in enumerate(scores) if j != i
        )
        keep.append(not beaten)
    return np.array(keep)


def test_dominated_points_are_excluded():
    x = [100, 200, 150, 50]
    y = [0.9, 0.8, 0.7, 0.95]
    # (150, 0.7) is beaten by (200, 0.8) on both axes; the others trade speed for accuracy.
    assert pareto_mask(x, y).tolist() == [True, True, False, True]


def test_tie_on_one_axis_is_dominated_by_the_better_other_axis():
    # Same throughput, lower accuracy: dominated. Same accuracy, lower throughput: dominated.
    assert pareto_mask([100, 100], [0.5, 0.6]).tolist() == [False, True]
    assert pareto_mask([100, 90], [0.6, 0.6]).tolist() == [True, False]


def test_exact_duplicates_both_stay_on_the_frontier():
    mask = pareto_mask([100, 100, 50], [0.6, 0.6, 0.5])
    assert mask.tolist() == [True, True, False]


def test_single_point_is_its_own_frontier():
    assert pareto_mask([3.0], [0.1]).tolist() == [True]


def test_empty_input_gives_empty_mask():
    assert pareto_mask([], []).tolist() == []


def test_nan_points_are_off_the_frontier_and_dominate_nothing():
    # The NaN-accuracy point is much faster; it must not knock (100, 0.6) off.
    mask = pareto_mask([100, 1000, np.nan, 50], [0.6, np.nan, 0.99, 0.5])
    assert mask.tolist() == [True, False, False, False]


def test_all_nan_gives_no_frontier():
    assert not pareto_mask([np.nan, np.nan], [np.nan, 1.0]).any()


def test_minimise_cost_maximise_accuracy():
    gmacs = [4.0, 12.0, 12.0, 60.0, 1.0]
    acc = [0.70, 0.80, 0.75, 0.79, 0.60]
    mask = pareto_mask(gmacs, acc, x_sense="min", y_sense="max")
    # 12 GMACs at 0.75 loses to 12 at 0.80; 60 GMACs at 0.79 loses to 12 at 0.80.
    assert mask.tolist() == [True, True, False, False, True]


@pytest.mark.parametrize("senses", [["max", "max"], ["min", "max"], ["max", "min", "max"]])
def test_matches_the_definition_on_random_points_with_many_ties(senses):
    rng = np.random.default_rng(0)
    points = rng.integers(0, 6, size=(60, len(senses))).astype(float)
    points[rng.integers(0, 60, size=5), rng.integers(0, len(senses), size=5)] = np.nan
    assert non_dominated(points, senses).tolist() == brute_force(points, senses).tolist()


def test_chunking_does_not_change_the_answer(monkeypatch):
    import suite.pareto

    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 2))
    whole = non_dominated(points, ["max", "max"])
    monkeypatch.setattr(suite.pareto, "_CHUNK", 7)
    assert non_dominated(points, ["max", "max"]).tolist() == whole.tolist()


def test_frontier_is_mutually_non_dominated_and_covers_every_point():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(200, 2))
    mask = non_dominated(points, ["max", "max"])
    front = points[mask]
    for a, b in itertools.permutations(front, 2):
        assert not ((a >= b).all() and (a > b).any())
    for p in points[~mask]:
        assert any((q >= p).all() and (q > p).any() for q in front)


def test_dataframe_helpers_align_with_the_index():
    frame = pd.DataFrame(
        {"images_per_sec": [100, 200, 150], "accuracy": [0.9, 0.8, 0.7], "gmacs": [10.0, 5.0, 20.0]},
        index=["a", "b", "c"],
    )
    assert throughput_accuracy_frontier(frame).to_dict() == {"a": True, "b": True, "c": False}
    assert cost_accuracy_frontier(frame).to_dict() == {"a": True, "b": True, "c": False}


def test_dataframe_non_numeric_cells_count_as_missing():
    frame = pd.DataFrame({"x": ["1", "oops", "3"], "y": [1.0, 9.0, 0.5]})
    assert frontier_mask(frame, {"x": "max", "y": "max"}).tolist() == [True, False, True]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="senses"):
        non_dominated([[1, 2]], ["max"])
    with pytest.raises(ValueError, match="'max' or 'min'"):
        non_dominated([[1, 2]], ["max", "up"])
    with pytest.raises(ValueError, match="equal length"):
        pareto_mask([1, 2], [1])
    with pytest.raises(KeyError, match="accuracy"):
        frontier_mask(pd.DataFrame({"x": [1]}), {"x": "max", "accuracy": "max"})


def test_benchmark_frontier_of_many_points(benchmark):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(3000, 2))
    mask = benchmark(non_dominated, points, ["max", "max"])
    assert 0 < mask.sum() < len(points)
