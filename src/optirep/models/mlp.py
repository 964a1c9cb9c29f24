"""Multilayer perceptrons: NeuroPlastic's MNIST classifier and the MNIST-1D baseline."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] x n_hidden -> Linear `head`.

    The hidden layers live in `body` (an nn.Sequential) and the last layer is `head`, so the
    parameter tensors are the same ones, in the same order, as NeuroPlastic's
    `MLPClassifier.net` (per-tensor optimizer statistics see the same partition).
    """

    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...], num_classes: int, dropout: float):
        super().__init__()
        if input_dim < 1 or num_classes < 1 or any(h < 1 for h in hidden_dims):
            raise ValueError(
                f"MLP sizes must be positive: input_dim={input_dim}, hidden_dims={hidden_dims}, "
                f"num_classes={num_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden_dims:
            # Dropout(0) is the identity; skipping it keeps the module list clean for p = 0.
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = h
        self.input_dim = input_dim
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, hidden] (after the last ReLU/Dropout)."""
        return self.body(x.reshape(x.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def np_mlp(input_dim: int = 784, hidden_dim: int = 256, num_classes: int = 10, dropout: float = 0.1) -> MLP:
    """NeuroPlastic's `MLPClassifier(784, 256, 10)`: 784-256-256-10, ReLU, Dropout 0.1.

    Seed: Sunnylincc/NeuroPlastic-Optimizer `models/mlp.py` (seeds-spec 4(e)); 269,322
    parameters at the defaults. Inputs of any shape [B, ...] are flattened (MNIST [B, 1, 28, 28]).
    """
    return MLP(input_dim, (hidden_dim, hidden_dim), num_classes, dropout)


def mnist1d_mlp(input_dim: int = 40, hidden_dim: int = 256, num_classes: int = 10, dropout: float = 0.0) -> MLP:
    """MLP for MNIST-1D: 40-256-256-10, ReLU, no dropout (78,858 parameters).

    No seed defines this model; it is optirep's cheap CPU task. The shape mirrors `np_mlp`
    (two hidden layers of 256) so the two MLP tasks differ only in data. The MNIST-1D paper's
    own MLP baseline is narrower (hidden 100); pass `hidden_dim=100` for that.
    """
    return MLP(input_dim, (hidden_dim, hidden_dim), num_classes, dropout)
