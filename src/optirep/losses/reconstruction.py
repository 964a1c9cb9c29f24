"""Reconstruction loss terms for the multi-loss autoencoder study (Planeswalker).

The seed's experiment multiplexes six "harmonious" losses that share a global minimum (perfect
reconstruction) but differ elsewhere: a colour-space BCE and five perceptual MSEs on frozen
ImageNet networks. Pretrained networks cannot be downloaded here, so the reduced-scale study uses
terms that keep that property without weights: each is zero exactly at recon == target.
Inputs are images in [0, 1], shape [B, C, H, W].
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _grad_l1(r, x):
    """L1 between horizontal and vertical image gradients (edges)."""
    dr_h, dx_h = r[..., :, 1:] - r[..., :, :-1], x[..., :, 1:] - x[..., :, :-1]
    dr_v, dx_v = r[..., 1:, :] - r[..., :-1, :], x[..., 1:, :] - x[..., :-1, :]
    return (dr_h - dx_h).abs().mean() + (dr_v - dx_v).abs().mean()


def _down_mse(r, x):
    """MSE after 2x average pooling (coarse structure)."""
    return F.mse_loss(F.avg_pool2d(r, 2), F.avg_pool2d(x, 2))


def _bce(r, x):
    return F.binary_cross_entropy(r.clamp(1e-6, 1 - 1e-6), x.clamp(0, 1))


def _ssim_loss(r, x, c1=0.01**2, c2=0.03**2):
    """1 - mean SSIM with a 3x3 uniform window (structural similarity)."""
    mu_r, mu_x = F.avg_pool2d(r, 3, 1, 1), F.avg_pool2d(x, 3, 1, 1)
    var_r = F.avg_pool2d(r * r, 3, 1, 1) - mu_r**2
    var_x = F.avg_pool2d(x * x, 3, 1, 1) - mu_x**2
    cov = F.avg_pool2d(r * x, 3, 1, 1) - mu_r * mu_x
    ssim = ((2 * mu_r * mu_x + c1) * (2 * cov + c2)) / ((mu_r**2 + mu_x**2 + c1) * (var_r + var_x + c2))
    return 1 - ssim.mean()


TERMS: dict[str, Term] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "bce": _bce,
    "grad_l1": _grad_l1,
    "down_mse": _down_mse,
    "ssim": _ssim_loss,
}


def reconstruction_losses(names: list[str]) -> dict[str, Term]:
    unknown = [n for n in names if n not in TERMS]
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown} (allowed values: {', '.join(TERMS)})")
    return {n: TERMS[n] for n in names}
