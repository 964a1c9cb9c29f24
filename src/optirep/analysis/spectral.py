"""Spectral metrics: the seed's fc-weight statistics and the standard effective rank / energy.

Two families, never mixed in one column:

* **The seed's metrics** (BiostatisV6 `experiments/resnet18_compare.py`, claims V6-9 and V6-10):
  computed on a *weight matrix* (the final `fc.weight`, 10x512 on CIFAR-10). With `S` the singular
  values of `W.reshape(out, -1)`, sorted descending,

      seed_effective_rank(W)        = (sum S)^2 / sum S^2          (a participation ratio on S,
                                                                    max = min(out, in); NOT Roy-Vetterli)
      seed_topk_concentration(W, k) = sum S[:k] / sum S            (sums of S, not of S^2)

* **The standard metrics** (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): computed in float64,

      p_k                  = S_k / sum_j S_j + eps,   eps = 1e-7 (RankMe's value)
      roy_vetterli_erank   = exp(-sum_k p_k log p_k)   (1 <= erank <= rank, up to eps)
      topk_energy(S, k)    = sum_{i<=k} S_i^2 / sum_i S_i^2   (fraction of variance in the top k)

  `feature_metrics` applies them to penultimate features `[N, D]` of a fixed held-out set.

All metrics are scale-free ratios, invariant to multiplying the matrix by a non-zero constant and to
orthogonal rotations on either side. A zero matrix (sum S = 0) or a matrix with a NaN/inf entry (a
diverged run) gives NaN for every metric instead of raising.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

#: RankMe's epsilon added to the normalised singular values (Garrido et al. 2023).
RANKME_EPS = 1e-7
#: k values reported for the top-k energy fraction (anchors E, "Adopt" 1).
ENERGY_KS = (1, 5, 10)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    """(out, ...) -> (out, -1), the seed's reshape of conv kernels; a vector is one row."""
    if w.ndim == 0:
        raise ValueError(f"spectral metrics need a matrix or a vector, got a scalar (shape {tuple(w.shape)})")
    if w.ndim == 1:
        return w.reshape(1, -1)
    return w.reshape(w.shape[0], -1)


# --------------------------------------------------------------------------------------------------
# The seed's metrics
# --------------------------------------------------------------------------------------------------
def seed_singular_values(weight) -> np.ndarray:
    """Singular values of `weight.reshape(out, -1)` as the seed computes them, descending.

    Like the seed, the SVD runs in the weight's own dtype (float32 for a trained `fc.weight`) with
    `torch.linalg.svd(..., full_matrices=False)`. Returns a float64 numpy copy; NaN-filled when the
    weight is not finite (torch's SVD does not converge on NaN input). A 1-D weight is one row
    (unlike `singular_values`, which reads a 1-D input as a spectrum).
    """
    w = _as_matrix(_as_tensor(weight))
    if not w.is_floating_point():
        w = w.double()
    elif w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()  # no half-precision SVD on CPU
    if not torch.isfinite(w).all():
        return np.full(min(w.shape), np.nan)
    s = torch.linalg.svd(w, full_matrices=False).S
    return s.double().numpy()


def _usable(s: np.ndarray) -> bool:
    """False for a zero or non-finite spectrum, where every ratio is 0/0 or NaN."""
    total = float(s.sum())
    return math.isfinite(total) and total > 0.0


def _seed_erank(s: np.ndarray) -> float:
    if not _usable(s):
        return math.nan
    return float(s.sum()) ** 2 / float((s**2).sum())


def _seed_topk(s: np.ndarray, k: int) -> float:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not _usable(s):
        return math.nan
    return float(s[:k].sum()) / float(s.sum())


def seed_effective_rank(weight) -> float:
    """The seed's "effective rank": `(sum S)^2 / sum S^2` of `weight.reshape(out, -1)` (V6-10).

    A participation ratio on the singular values, between 1 (rank one) and `min(out, in)` (all
    singular values equal; 10 for a 10x512 CIFAR-10 head). It is not the Roy-Vetterli effective rank
    (`roy_vetterli_erank`), which gives different numbers on the same matrix.
    """
    return _seed_erank(seed_singular_values(weight))


def seed_topk_concentration(weight, k: int = 5) -> float:
    """The seed's "top-k singular value concentration": `sum S[:k] / sum S` (V6-9, k = 5).

    Sums of singular values, not of their squares (compare `topk_energy`). k larger than the number
    of singular values gives 1.0.
    """
    return _seed_topk(seed_singular_values(weight), k)


def seed_metrics(weight, k: int = 5) -> dict:
    """The seed's two fc-weight statistics plus the spectrum itself (for the spectrum plot)."""
    s = seed_singular_values(weight)
    return {
        "shape": list(_as_tensor(weight).shape),
        "singular_values": [float(v) for v in s],
        "seed_effective_rank": _seed_erank(s),
        f"seed_top{k}_concentration": _seed_topk(s, k),
    }


# --------------------------------------------------------------------------------------------------
# The standard metrics
# --------------------------------------------------------------------------------------------------
def singular_values(x) -> np.ndarray:
    """float64 singular values, descending: `x` itself if 1-D, else those of `x.reshape(out, -1)`.

    A 1-D input is taken to be a spectrum already; it is sorted descending and must be >= 0.
    """
    t = _as_tensor(x)
    if t.ndim == 1:
        s = t.double().numpy()
        if np.any(s < 0):
            raise ValueError("a 1-D input is read as singular values and must be non-negative; "
                             f"got min {s.min()!r}")
        return np.sort(s)[::-1].copy()
    w = _as_matrix(t).double()
    if not torch.isfinite(w).all():
        return np.full(min(w.shape), np.nan)
    return torch.linalg.svdvals(w).numpy()


def roy_vetterli_erank(x, eps: float = RANKME_EPS) -> float:
    """Roy-Vetterli effective rank `exp(H(p))`, `p = S / sum S + eps`, as RankMe computes it.

    Args:
        x: singular values (1-D) or a matrix (reshaped to `(out, -1)`); SVD in float64.
        eps: added to every `p_k` (RankMe's 1e-7) so `0 log 0` never occurs; it biases the
            result up by O(eps * len(S) * log(1/eps)), about 3e-6 for 10 values.
    """
    s = singular_values(x)
    total = s.sum()
    if not np.isfinite(total) or total <= 0.0:
        return math.nan
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def topk_energy(x, k: int) -> float:
    """Fraction of the squared spectrum in the top k: `sum_{i<=k} S_i^2 / sum_i S_i^2`.

    Args:
        x: singular values (1-D) or a matrix (reshaped to `(out, -1)`).
        k: number of leading singular values; k >= len(S) gives 1.0.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    s = singular_values(x)
    sq = s**2
    total = sq.sum()
    if not np.isfinite(total) or total <= 0.0:
        return math.nan
    return float(sq[:k].sum() / total)


def spectrum_metrics(x, ks: Iterable[int] = ENERGY_KS) -> dict:
    """`erank` (Roy-Vetterli) and `top{k}_energy` for each k, from a matrix or a spectrum."""
    s = singular_values(x)
    out = {"erank": roy_vetterli_erank(s) if np.all(np.isfinite(s)) else math.nan}
    for k in ks:
        out[f"top{k}_energy"] = topk_energy(s, k) if np.all(np.isfinite(s)) else math.nan
    return out


def feature_metrics(features, center: bool = True, ks: Iterable[int] = ENERGY_KS) -> dict:
    """Representation metrics of penultimate features `[N, D]` on a fixed held-out set.

    Centring: with `center=True` (default) the per-dimension mean over the N samples is subtracted
    first, so the spectrum is that of the feature covariance (PCA): a constant offset shared by all
    samples (ReLU features are all positive) would otherwise appear as one dominant direction and
    deflate the rank. RankMe itself does not centre; pass `center=False` to match it. The flag is
    returned with the numbers so tables can state it.

    Returns:
        dict with `erank`, `top{k}_energy` for k in `ks`, `n`, `dim`, `centered`, and
        `samples_per_dim` (N / D; the anchors ask for >= 10 before trusting the erank).
    """
    f = _as_tensor(features).double()
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D], got shape {tuple(f.shape)}")
    n, d = f.shape
    if n < 2:
        raise ValueError(f"features need at least 2 samples, got N = {n}")
    if center:
        f = f - f.mean(dim=0, keepdim=True)
    out = spectrum_metrics(f, ks)
    out.update({"n": int(n), "dim": int(d), "centered": bool(center), "samples_per_dim": n / d})
    return out
