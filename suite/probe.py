"""The l2-regularized least-squares few-shot probe, solved exactly from one eigendecomposition.

This is the linear few-shot evaluation of the MLP-Mixer and ViT papers, with the recipe of Google's
big_vision evaluator (`big_vision/evaluators/fewshot_lsr.py`), written here from its description:

1. standardize every feature with the mean and population standard deviation (+1e-5) of the
   k-shot training set, and apply the same statistics to the test features;
2. append a constant bias column of 100 (large, so the bias is almost unregularized);
3. regress one-hot targets mapped to {-1, +1};
4. eigendecompose the Gram matrix once, XᵀX (D+1 x D+1) when there are at least as many examples
   as columns ("primal"), else XXᵀ (N x N, "dual"), so that every l2 costs only a rescaling:
       primal  W = Q (Λ + l2 I)⁻¹ Qᵀ Xᵀ Y          with XᵀX = Q Λ Qᵀ
       dual    W = Xᵀ Q (Λ + l2 I)⁻¹ Qᵀ Y          with XXᵀ = Q Λ Qᵀ
   Both read W = L diag(1 / (Λ + l2)) R, with L and R fixed;
5. predict the argmax class; accuracy is the fraction predicted correctly.

The l2 value is used as given (not scaled by N); the reference's fixed value is 2^10.

Scoring is the expensive part at ImageNet scale (10 000 test points, 1000 classes, 30 l2 values):
the test features are projected once into the eigenbasis (P = X_test L), after which each l2
costs one matmul P @ (diag(1 / (Λ + l2)) R) of the same size as scoring with W, and nothing more.

Everything is computed in float64, on CPU and GPU alike. In float32 the bias column of 100 puts an
entry of 100² N on the diagonal of XᵀX beside entries of order N, and the rounding error of the
eigendecomposition (~1e-7 of the largest eigenvalue) then exceeds the small eigenvalues: at
N = 5000, D = 768 some come out negative, and Λ + l2 at small l2 is near zero or negative, which
flips predictions. float64 leaves ~1e-16 relative error, far below any l2 of the grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Value of the constant column appended for the bias (the reference's BIAS_CONSTANT).
BIAS_VALUE = 100.0
#: Added to the population standard deviation before dividing (the reference's value).
STD_EPSILON = 1e-5
#: The reference's fixed l2 strength (big_vision configs/common_fewshot.py: 2.0 ** 10).
FIXED_L2 = 2.0 ** 10
#: The grid swept by the held-out rule: 2^-10 .. 2^19, 30 values.
L2_GRID: tuple[float, ...] = tuple(2.0 ** e for e in range(-10, 20))
#: Test rows scored at a time, to bound memory at (rows x classes) float64.
SCORE_BLOCK_ROWS = 8192

ArrayLike = Any  # numpy array or torch tensor


def as_float64(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """A float64 torch tensor from a numpy array or tensor, on `device` (default: where it is)."""
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return tensor.to(device=device if device is not None else tensor.device, dtype=torch.float64)


def as_labels(y: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer class labels 0..C-1 as a 1-D int64 tensor."""
    tensor = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if tensor.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not bool(torch.all(tensor == tensor.round())):
        raise ValueError("labels must be integers 0..C-1")
    tensor = tensor.to(device=device if device is not None else tensor.device, dtype=torch.int64)
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError("labels must be integers 0..C-1")
    return tensor


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and (population std + epsilon) of a training set; maps features to probe inputs."""

    mean: torch.Tensor
    std: torch.Tensor
    bias_value: float = BIAS_VALUE

    @classmethod
    def fit(cls, x: torch.Tensor, epsilon: float = STD_EPSILON, bias_value: float = BIAS_VALUE) -> Standardizer:
        mean = x.mean(dim=0, keepdim=True)
        std = x.std(dim=0, correction=0, keepdim=True) + epsilon
        return cls(mean, std, bias_value)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized features with the constant bias column appended (N x (D+1))."""
        z = (x - self.mean) / self.std
        return torch.nn.functional.pad(z, (0, 1), value=self.bias_value)


def standardize(train_x: ArrayLike, test_x: ArrayLike | None = None, *, epsilon: float = STD_EPSILON,
                bias_value: float = BIAS_VALUE) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Standardized, bias-augmented float64 train (and test) inputs, with the train statistics."""
    train = as_float64(train_x)
    scaler = Standardizer.fit(train, epsilon, bias_value)
    test = scaler(as_float64(test_x, train.device)) if test_x is not None else None
    return scaler(train), test


def signed_one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot rows mapped to {-1, +1}, float64."""
    return 2.0 * torch.nn.functional.one_hot(y, num_classes).to(torch.float64) - 1.0


@dataclass(frozen=True)
class LsrSolution:
    """Ridge regression for every l2 at once: W(l2) = lhs @ diag(1 / (eigs + l2)) @ rhs."""

    scaler: Standardizer
    eigs: torch.Tensor
    lhs: torch.Tensor
    rhs: torch.Tensor
    num_classes: int
    form: str  # "primal" (eigh of XᵀX) or "dual" (eigh of XXᵀ)

    def weights(self, l2: float) -> torch.Tensor:
        """The (D+1) x C weight matrix for one l2 value."""
        return (self.lhs * (1.0 / (self.eigs + l2))) @ self.rhs

    def predict(self, test_x: ArrayLike, l2_regs: Iterable[float]) -> dict[float, torch.Tensor]:
        """Predicted classes of the test points for each l2, from one projection of the test set."""
        l2_values = list(dict.fromkeys(float(v) for v in l2_regs))  # a repeated l2 is scored once
        x = as_float64(test_x, self.eigs.device)
        scaled_rhs = {l2: self.rhs * (1.0 / (self.eigs + l2)).unsqueeze(1) for l2 in l2_values}
        preds: dict[float, list[torch.Tensor]] = {l2: [] for l2 in l2_values}
        for start in range(0, x.shape[0], SCORE_BLOCK_ROWS):
            projected = self.scaler(x[start:start + SCORE_BLOCK_ROWS]) @ self.lhs
            for l2 in l2_values:
                preds[l2].append(torch.argmax(projected @ scaled_rhs[l2], dim=1))
        empty = torch.empty(0, dtype=torch.int64, device=x.device)
        return {l2: torch.cat(parts) if parts else empty for l2, parts in preds.items()}

    def accuracy(self, test_x: ArrayLike, test_y: ArrayLike, l2_regs: Iterable[float]) -> dict[float, float]:
        """Fraction of test points whose argmax class is right, per l2."""
        labels = as_labels(test_y, self.eigs.device)
        return {l2: float((pred == labels).to(torch.float64).mean()) if labels.numel() else float("nan")
                for l2, pred in self.predict(test_x, l2_regs).items()}


def fit(train_x: ArrayLike, train_y: ArrayLike, num_classes: int | None = None, *,
        device: torch.device | str | None = None, epsilon: float = STD_EPSILON,
        bias_value: float = BIAS_VALUE) -> LsrSolution:
    """Standardize, add the bias column and eigendecompose the smaller Gram matrix, in float64."""
    raw = as_float64(train_x, device)
    if raw.dim() != 2 or raw.shape[0] == 0:
        raise ValueError(f"train features must be a non-empty N x D matrix, got shape {tuple(raw.shape)}")
    labels = as_labels(train_y, raw.device)
    if labels.shape[0] != raw.shape[0]:
        raise ValueError(f"{raw.shape[0]} train features but {labels.shape[0]} labels")
    classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if int(labels.max()) >= classes:
        raise ValueError(f"label {int(labels.max())} out of range for {classes} classes")
    scaler = Standardizer.fit(raw, epsilon, bias_value)
    x = scaler(raw)
    y = signed_one_hot(labels, classes)
    n, d = x.shape
    if n >= d:
        eigs, q = torch.linalg.eigh(x.T @ x)
        lhs, rhs, form = q, q.T @ (x.T @ y), "primal"
    else:
        eigs, q = torch.linalg.eigh(x @ x.T)
        lhs, rhs, form = x.T @ q, q.T @ y, "dual"
    return LsrSolution(scaler, eigs, lhs, rhs, classes, form)


def lsr_accuracy(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike,
                 l2_regs: float | Sequence[float] = (FIXED_L2,), *, num_classes: int | None = None,
                 device: torch.device | str | None = None) -> dict[float, float]:
    """Test accuracy of the least-squares probe for each l2 value, from one decomposition.

    Features are N x D (numpy or torch, any float dtype), labels are integers 0..C-1. The number
    of classes defaults to the largest label seen (train or test) + 1. Computed in float64 on
    `device` (default: the device of `train_x`).
    """
    regs = [float(l2_regs)] if isinstance(l2_regs, (int, float)) else [float(v) for v in l2_regs]
    if num_classes is None:
        test_labels = as_labels(test_y)
        largest_test = int(test_labels.max()) if test_labels.numel() else 0
        num_classes = max(int(as_labels(train_y).max()), largest_test) + 1
    return fit(train_x, train_y, num_classes, device=device).accuracy(test_x, test_y, regs)


def choose_l2_heldout(train_x: ArrayLike, train_y: ArrayLike, heldout_x: ArrayLike, heldout_y: ArrayLike,
                      l2_grid: Sequence[float] = L2_GRID, *, num_classes: int | None = None,
                      device: torch.device | str | None = None) -> tuple[float, dict[float, float]]:
    """The l2 of the grid with the best accuracy on a held-out split (ties: the larger l2).

    The held-out split must be carved from the training shots, never from the test set. Returns
    the chosen value and the held-out accuracy of every grid value.
    """
    scores = fit(train_x, train_y, num_classes, device=device).accuracy(heldout_x, heldout_y, l2_grid)
    best = max(scores.values())
    chosen = max(l2 for l2, acc in scores.items() if acc == best)
    return chosen, scores
