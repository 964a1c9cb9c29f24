"""In-memory splits and the deterministic index arithmetic behind them.

Validation is carved from the training set (stratified, seeded by `split_seed`, fixed across
run seeds); the training subset (`train_fraction` or `per_class`, stratified, seeded by
`subset_seed`) is then drawn from what remains. Every index set is returned sorted, so a subset
depends only on (labels, size, seed): the same for every optimizer at a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["TensorSplit", "Splits", "stratified_take", "carve_val", "train_subset", "resolve_size"]


class TensorSplit(Dataset):
    """A split held as two tensors: `x` (float32 inputs or long token ids) and `y` (long labels).

    `split[i]` is `(x[i], y[i])`; `split.to(device)` moves both (the training loop can then
    index batches directly instead of going through a DataLoader).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"TensorSplit: x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def to(self, device) -> "TensorSplit":
        return TensorSplit(self.x.to(device), self.y.to(device))

    def __repr__(self) -> str:
        return f"TensorSplit(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)})"


@dataclass
class Splits:
    """What `optirep.data.load` returns: train/val/test splits and a description dict `info`."""

    train: Any
    val: Any
    test: Any
    info: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.train, self.val, self.test, self.info))


def resolve_size(size: int | float, n: int, what: str) -> int:
    """An int count or a fraction of `n` (0 < f < 1) as a count in [0, n]."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be an int count or a float fraction, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            raise ValueError(f"{what} as a float is a fraction in [0, 1), got {size}; give an int for a count")
        return int(round(float(size) * n))
    if not 0 <= size <= n:
        raise ValueError(f"{what} must be in [0, {n}] (the training set has {n} examples), got {size}")
    return int(size)


def _largest_remainder(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes proportionally to `counts`, exactly summing to `total`."""
    quota = counts * (total / counts.sum())
    alloc = np.floor(quota).astype(np.int64)
    rest = total - alloc.sum()
    order = np.lexsort((np.arange(len(counts)), -(quota - alloc)))  # ties to the lower class
    alloc[order[:rest]] += 1
    return np.minimum(alloc, counts)


def stratified_take(labels: np.ndarray, per_class_counts: np.ndarray, seed: int) -> np.ndarray:
    """Positions (into `labels`) of `per_class_counts[c]` seeded random examples of each class, sorted."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for c, k in zip(classes, per_class_counts):
        pos = np.flatnonzero(labels == c)
        out.append(pos[rng.permutation(len(pos))[:k]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def carve_val(labels: np.ndarray, val_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, val positions): a stratified validation set of `val_size` examples."""
    labels = np.asarray(labels)
    n_val = resolve_size(val_size, len(labels), "val_size")
    _, counts = np.unique(labels, return_counts=True)
    val = stratified_take(labels, _largest_remainder(counts, n_val), seed)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def train_subset(labels: np.ndarray, train_fraction: float | None, per_class: int | None, seed: int) -> np.ndarray:
    """Positions of the training subset: all, a stratified `train_fraction`, or `per_class` per class."""
    labels = np.asarray(labels)
    if train_fraction is not None and per_class is not None:
        raise ValueError("give train_fraction or per_class, not both")
    _, counts = np.unique(labels, return_counts=True)
    if per_class is not None:
        if int(per_class) < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        return stratified_take(labels, np.minimum(counts, int(per_class)), seed)
    if train_fraction is None or float(train_fraction) == 1.0:
        return np.arange(len(labels))
    f = float(train_fraction)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    # at least one example per class, so a tiny fraction still sees every class
    return stratified_take(labels, np.maximum(1, np.round(counts * f).astype(np.int64)), seed)
