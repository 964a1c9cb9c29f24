"""Planeswalker's multi-scale autoencoder, scaled down for 32x32 images (CIFAR-10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    # The seed's block order: conv -> LeakyReLU(0.2) -> LayerNorm over (C, H, W).
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.LeakyReLU(0.2), nn.GroupNorm(1, c_out))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class _Branch(nn.Module):
    """Encoder branch: conv block at full resolution, then (bilinear /2 + conv block) down to `res`,
    then a 1-channel conv, resized to the latent grid and standardised (non-affine LayerNorm)."""

    def __init__(self, in_channels: int, input_size: int, res: int, latent_size: int, features: int, k: int):
        super().__init__()
        self.sizes = []
        s = input_size
        while s > res:
            s //= 2
            self.sizes.append(s)
        self.stem = _block(in_channels, features, k)
        self.down = nn.ModuleList(_block(features, features, k) for _ in self.sizes)
        self.to_map = nn.Conv2d(features, 1, k, padding=k // 2)
        self.latent_size = latent_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for size, block in zip(self.sizes, self.down):
            h = block(_resize(h, size))
        m = _resize(self.to_map(h), self.latent_size)  # [B, 1, g, g]
        return F.layer_norm(m, m.shape[-2:])


class PlaneswalkerAE(nn.Module):
    """Deterministic multi-scale autoencoder: one latent map per encoder resolution.

    encode(x [B, C, S, S]) -> z [B, n_branches * g * g]; decode(z) -> [B, C, S, S] in (0, 1);
    forward(x) = decode(encode(x)).

    Encoder: one branch per resolution in `resolutions` (S, S/2, ..., 2 by default). Each branch
    starts at full resolution and alternates bilinear halving with conv blocks (conv ->
    LeakyReLU(0.2) -> LayerNorm over (C, H, W)) until its resolution, ends in a 1-channel conv,
    is bilinearly resized to the g x g latent grid and standardised by a non-affine LayerNorm.
    Decoder: every latent map is expanded by its own conv block (1 -> features) on the g x g
    grid; the expansions are concatenated, fused by a conv block, and a trunk of (bilinear x2
    upsample + conv block) brings them to S x S; a final conv to C channels and a sigmoid.
    Init: Kaiming-He normal for LeakyReLU(a = 0.2), zero biases (the seed's init).
    """

    def __init__(self, in_channels: int, input_size: int, resolutions: tuple[int, ...], latent_size: int,
                 features: int, kernel_size: int):
        super().__init__()
        k = kernel_size
        self.in_channels, self.input_size, self.latent_size = in_channels, input_size, latent_size
        self.n_maps = len(resolutions)
        self.branches = nn.ModuleList(
            _Branch(in_channels, input_size, r, latent_size, features, k) for r in resolutions
        )
        self.expand = nn.ModuleList(_block(1, features, k) for _ in resolutions)
        self.fuse = _block(features * self.n_maps, features, k)
        self.up_sizes = []
        s = latent_size
        while s < input_size:
            s *= 2
            self.up_sizes.append(s)
        self.trunk = nn.ModuleList(_block(features, features, k) for _ in self.up_sizes)
        self.to_image = nn.Conv2d(features, in_channels, k, padding=k // 2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    @property
    def latent_dim(self) -> int:
        return self.n_maps * self.latent_size ** 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code z [B, n_maps * g * g], map-major (map i = z[:, i*g*g:(i+1)*g*g])."""
        return torch.cat([b(x) for b in self.branches], dim=1).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        maps = z.reshape(z.shape[0], self.n_maps, self.latent_size, self.latent_size)
        h = torch.cat([e(maps[:, i:i + 1]) for i, e in enumerate(self.expand)], dim=1)
        h = self.fuse(h)
        for size, block in zip(self.up_sizes, self.trunk):
            h = block(_resize(h, size))
        return torch.sigmoid(self.to_image(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def pw_autoencoder(in_channels: int = 3, input_size: int = 32, resolutions: tuple[int, ...] | list[int] | None = None,
                   latent_size: int = 8, features: int = 32, kernel_size: int = 3) -> PlaneswalkerAE:
    """Planeswalker's "DAE", faithful in spirit and scaled to 32x32 (166,952 parameters by default).

    Seed: ExamDay/Planeswalker `planeswalker.py @ df9d184` (seeds-spec 3(e)): 128x128 anime
    faces, 8 parallel encoder branches at resolutions 128..2, each ending in a 1-channel map
    resized to 8x8 -> z in R^512 (96x compression), decoder trunk 8 -> 128 with bilinear
    upsampling, 64 features, 7x7 convs, sigmoid output. Deterministic (no sampling).

    Scaled down here (defaults): 5 branches at 32, 16, 8, 4, 2 (the seed's halving ladder
    ending at 2, cut to the smaller image); the same 8x8 latent grid, so z in R^320 = 9.6x
    compression of 3x32x32, the "10x on CIFAR-10" of claim PW-1; 32 features instead of 64;
    3x3 convs instead of 7x7 (about the same fraction of the image per kernel).
    Also changed: LayerNorm over (C, H, W) is GroupNorm(1, C) (per-channel instead of
    per-element affine, so the block does not depend on the resolution); the seed's
    data-initialised normalisers (first-batch mean/std on the latent and, with target std 0.25,
    before the output sigmoid) are left out: the latent maps are still standardised by the
    non-affine LayerNorm the seed also applies, and a training loop needs no extra init pass.
    `resolutions` must be powers-of-two fractions of `input_size`; `input_size / latent_size`
    must be a power of two.
    """
    if min(in_channels, input_size, latent_size, features, kernel_size) < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"pw_autoencoder: sizes must be positive and kernel_size odd; got in_channels={in_channels}, "
            f"input_size={input_size}, latent_size={latent_size}, features={features}, kernel_size={kernel_size}"
        )
    if resolutions is None:
        resolutions, r = [], input_size
        while r >= 2:
            resolutions.append(r)
            r //= 2
    resolutions = tuple(int(r) for r in resolutions)

    def halvings(size: int) -> bool:  # size reachable from input_size by repeated halving
        s = input_size
        while s > size and s % 2 == 0:
            s //= 2
        return s == size

    bad = [r for r in resolutions if r < 1 or not halvings(r)]
    if not resolutions or bad:
        raise ValueError(
            f"pw_autoencoder: resolutions must be input_size / 2**k; got {list(resolutions)} for input_size {input_size}"
        )
    if not halvings(latent_size):
        raise ValueError(
            f"pw_autoencoder: input_size / latent_size must be a power of two; got {input_size} / {latent_size}"
        )
    return PlaneswalkerAE(in_channels, input_size, resolutions, latent_size, features, kernel_size)
