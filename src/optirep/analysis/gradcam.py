"""Grad-CAM maps, ROAD faithfulness scores, the RandomCAM floor and the image x optimizer grid.

The CAM engine is pytorch-grad-cam (`pip install grad-cam`, imported as `pytorch_grad_cam`). The
protocol (anchors E, "Adopt" 3-4): `model.eval()`, a fixed image set, the **true class** as target
(`ClassifierOutputTarget(y)`, not the argmax, so every optimizer is explained on the same targets),
one CAM object per layer used as a context manager (the library leaks hooks otherwise), and
faithfulness measured by `ROADCombined(percentiles=[20, 40, 60, 80])` against a RandomCAM floor.

Warnings:
    * The library applies a ReLU and then **min-max normalises every map per image** to [0, 1], so
      absolute CAM intensity is discarded: maps are never comparable in magnitude across images or
      optimizers. Compare optimizers by ROAD scores (a number per image), not by map brightness.
    * Resolution: with torchvision's ImageNet stem on 32x32 inputs (the seed's ResNet-18),
      `layer3` is 2x2 and `layer4` 1x1, so their upsampled maps carry little or no spatial
      information (a 1x1 map normalises to all zeros). A CIFAR stem gives 8x8 and 4x4.
    * ROAD's noisy linear imputation and RandomCAM draw random numbers; every function here takes
      a `seed` and runs under a forked RNG so results are repeatable and global RNG state is left
      untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

#: ROAD thresholds of the protocol (anchors E: `ROADCombined(percentiles=[20,40,60,80])`).
ROAD_PERCENTILES = (20, 40, 60, 80)
DEFAULT_LAYERS = ("layer3", "layer4")


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called `name` (dotted path); for a container such as ResNet's `layer4`, its last
    block (`layer4[-1]`, the layer the pytorch-grad-cam README uses for ResNets)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_children()]
        raise ValueError(f"target layer {name!r} not found in {type(model).__name__}; "
                         f"top-level modules: {known}") from None
    if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0:
        return module[-1]
    return module


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Seed torch (CPU and the current CUDA device) and numpy for the block, then restore both."""
    if seed is None:
        yield
        return
    np_state = np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _targets(labels) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(y)) for y in torch.as_tensor(labels).reshape(-1).tolist()]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _cam_maps(cam_cls, model, images, labels, layers) -> dict[str, np.ndarray]:
    images = torch.as_tensor(images).to(_device(model))
    targets = _targets(labels)
    if len(targets) != images.shape[0]:
        raise ValueError(f"need one label per image, got {len(targets)} labels for {images.shape[0]} images")
    out: dict[str, np.ndarray] = {}
    with _eval_mode(model), torch.enable_grad():
        for name in layers:
            layer = resolve_layer(model, name)
            maps = None
            with cam_cls(model=model, target_layers=[layer]) as cam:
                maps = cam(input_tensor=images, targets=targets)
            # the library's __exit__ swallows IndexError (it prints it): fail loudly instead
            if maps is None:
                raise RuntimeError(f"{cam_cls.__name__} failed on layer {name!r} (see the message above)")
            out[name] = np.asarray(maps, dtype=np.float32)
    return out


def gradcam_maps(model: nn.Module, images: torch.Tensor, labels,
                 layers: Sequence[str] = DEFAULT_LAYERS) -> dict[str, np.ndarray]:
    """Grad-CAM of the true class, one map per image for each target layer.

    Args:
        model: a classifier; put in eval mode for the call, its training flag restored after.
        images: `[B, C, H, W]`, already normalised as the model expects.
        labels: `[B]` true classes (the targets).
        layers: module names (dotted paths); a container resolves to its last block.

    Returns:
        {layer: float32 array [B, H, W] in [0, 1]} upsampled to the input size and min-max
        normalised per image by the library (see the module Warnings: not comparable across
        optimizers).
    """
    from pytorch_grad_cam import GradCAM

    return _cam_maps(GradCAM, model, images, labels, layers)


def road_scores(model: nn.Module, images: torch.Tensor, labels, cams: np.ndarray,
                percentiles: Sequence[int] = ROAD_PERCENTILES, seed: int | None = 0) -> np.ndarray:
    """ROADCombined faithfulness score of each image's CAM (higher = more faithful).

    Math (Rong et al. 2022, as pytorch-grad-cam implements it): for each percentile, pixels are
    replaced by noisy linear imputation in most-relevant-first (MoRF) and least-relevant-first
    (LeRF) order, and the change of the true-class logit is recorded;
    score = mean_percentiles(LeRF change - MoRF change) / 2.

    Args:
        cams: `[B, H, W]` maps for `images` (e.g. one entry of `gradcam_maps`).
        percentiles: ROAD thresholds (the protocol's 20, 40, 60, 80).
        seed: seeds the imputation noise (None: use the global RNG).

    Returns:
        float32 array `[B]`.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined

    images = torch.as_tensor(images).to(_device(model))
    cams = np.asarray(cams, dtype=np.float32)
    if cams.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"cams must have shape [B, H, W] = {(images.shape[0], *images.shape[-2:])}, "
                         f"got {cams.shape}")
    targets = _targets(labels)
    metric = ROADCombined(percentiles=list(percentiles))
    with _eval_mode(model), _seeded(seed):
        scores = metric(images, cams, targets, model)
    return np.asarray(scores, dtype=np.float32).reshape(-1)


def random_cam_floor(model: nn.Module, images: torch.Tensor, labels,
                     layers: Sequence[str] = DEFAULT_LAYERS,
                     percentiles: Sequence[int] = ROAD_PERCENTILES,
                     seed: int | None = 0) -> dict[str, np.ndarray]:
    """ROAD scores of RandomCAM maps (uniform random channel weights): the floor a real CAM must beat.

    Returns:
        {layer: float32 array [B]} of ROADCombined scores, same layers as `gradcam_maps`.
    """
    from pytorch_grad_cam import RandomCAM

    with _seeded(seed):
        maps = _cam_maps(RandomCAM, model, images, labels, layers)
    return {name: road_scores(model, images, labels, m, percentiles, seed) for name, m in maps.items()}


def _display(img: np.ndarray) -> np.ndarray:
    """[C, H, W] normalised image -> [H, W, C] (or [H, W]) in [0, 1] for imshow."""
    img = np.asarray(img, dtype=np.float32)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-7)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


# Largest figure that fits the paper's text block with its caption (inches: width, height).
GRID_MAX_IN = (6.5, 7.5)
GRID_LABEL_IN = 1.1  # left margin for the optimizer names
GRID_TITLE_IN = 0.35


def grid_size(n_images: int, n_optimizers: int, max_in=GRID_MAX_IN) -> tuple[float, float]:
    """(width, height) in inches of the Grad-CAM grid: images as columns, the input row then one row
    per optimizer, square cells as large as fit in `max_in` (at most 0.9 in).

    Raises:
        ValueError: when the grid would need cells under 0.25 in (about 3 mm) to fit; show fewer
            images or optimizers then.
    """
    rows = 1 + n_optimizers
    cell = min(0.9, (max_in[0] - GRID_LABEL_IN) / n_images, (max_in[1] - GRID_TITLE_IN) / rows)
    if cell < 0.25:
        raise ValueError(f"a Grad-CAM grid of {n_images} images x {n_optimizers} optimizers does not fit "
                         f"{max_in[0]} x {max_in[1]} in with cells of at least 0.25 in; use fewer images "
                         f"(--per-class) or optimizers")
    return GRID_LABEL_IN + cell * n_images, GRID_TITLE_IN + cell * rows


def gradcam_grid(images, maps_by_optimizer: Mapping[str, np.ndarray], out_path,
                 title: str | None = None) -> Path:
    """Save a grid figure: one column per image; the input row, then one Grad-CAM overlay row per optimizer.

    Sized by `grid_size` to fit a page with its caption (10 images x 13 optimizers still fit);
    optimizer names label the rows horizontally. CAM intensities are per-image min-max normalised
    by pytorch-grad-cam, so they are never comparable across optimizers (or images): read the
    figure for *where* each model looks, and the ROAD scores for how faithful the maps are.

    Args:
        images: `[B, C, H, W]` (tensor or array) as fed to the model; each is min-max stretched for
            display only.
        maps_by_optimizer: {optimizer label: `[B, H, W]` maps in [0, 1]}, rows in this order.
        out_path: file to write (format from its suffix); written atomically.

    Returns:
        the written path.
    """
    from matplotlib.figure import Figure

    imgs = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if imgs.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {imgs.shape}")
    if not maps_by_optimizer:
        raise ValueError("maps_by_optimizer is empty: need at least one optimizer's maps")
    b = imgs.shape[0]
    for label, maps in maps_by_optimizer.items():
        if np.shape(maps) != (b, *imgs.shape[-2:]):
            raise ValueError(f"maps for {label!r} must have shape {(b, *imgs.shape[-2:])}, "
                             f"got {np.shape(maps)}")
    width, height = grid_size(b, len(maps_by_optimizer))
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1 + len(maps_by_optimizer), b, squeeze=False,
                        gridspec_kw={"wspace": 0.03, "hspace": 0.03})
    fig.subplots_adjust(left=GRID_LABEL_IN / width, right=0.995, bottom=0.005, top=1 - GRID_TITLE_IN / height)
    for i in range(b):
        shown = _display(imgs[i])
        gray = "gray" if shown.ndim == 2 else None
        axes[0, i].imshow(shown, cmap=gray)
        for j, maps in enumerate(maps_by_optimizer.values(), start=1):
            axes[j, i].imshow(shown, cmap=gray)
            axes[j, i].imshow(np.asarray(maps[i]), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    for j, label in enumerate(["input", *maps_by_optimizer]):
        axes[j, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "Grad-CAM, true class (maps min-max normalised per image)", fontsize=7,
                 y=1 - 0.05 / height, va="top")

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".") or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, dpi=120)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
