"""Batched image augmentation applied by the training loop, one call per batch.

`augment(x, "crop_flip", g)` is torchvision's `RandomCrop(32, padding=4)` followed by
`RandomHorizontalFlip()` (the V6 CIFAR protocol), done on the whole normalised batch at once on
its own device. Padding uses `fill`, the normalised value of a black pixel (`-mean/std` per
channel, `info["augment_fill"]`), so the border is what torchvision's zero padding of the raw
image becomes after `Normalize`. Given the same generator state it returns the same batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["augment", "KINDS"]

KINDS = ("none", "flip", "crop", "crop_flip")


def _draw(generator: torch.Generator | None, fn, *args, device, **kw):
    # Draw on the generator's device (a CUDA generator cannot fill CPU tensors), then move.
    gdev = generator.device if generator is not None else torch.device("cpu")
    return fn(*args, generator=generator, device=gdev, **kw).to(device)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator | None = None, padding: int = 4,
            fill: float | Sequence[float] | torch.Tensor = 0.0) -> torch.Tensor:
    """Randomly crop (from a `padding`-padded copy) and/or horizontally flip each image of `x`.

    Args:
        x: `[B, C, H, W]` float batch.
        kind: one of "none", "flip", "crop", "crop_flip".
        generator: source of randomness (on any device); None uses torch's global generator.
        padding: pixels of border added on each side before cropping back to `H x W`.
        fill: border value, a scalar or one per channel.
    """
    if kind not in KINDS:
        raise ValueError(f"augment: unknown kind {kind!r}; known: {list(KINDS)}")
    if kind == "none":
        return x
    if x.ndim != 4:
        raise ValueError(f"augment: expected a [B, C, H, W] batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if kind in ("crop", "crop_flip") and padding > 0:
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
        if fill_t.numel() not in (1, c):
            raise ValueError(f"augment: fill must be a scalar or {c} values, got {fill_t.numel()}")
        padded = F.pad(x, (padding,) * 4)  # zeros, then the border gets its per-channel fill
        border = torch.ones(1, 1, h + 2 * padding, w + 2 * padding, dtype=torch.bool, device=x.device)
        border[..., padding:padding + h, padding:padding + w] = False
        padded = torch.where(border, fill_t.reshape(1, -1, 1, 1).expand(1, c, 1, 1), padded)
        oy = _draw(generator, torch.randint, 0, 2 * padding + 1, (b,), device=x.device)
        ox = _draw(generator, torch.randint, 0, 2 * padding + 1, (b,), device=x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2).contiguous()  # [B, C, H, W]
    if kind in ("flip", "crop_flip"):
        flip = _draw(generator, torch.rand, b, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
