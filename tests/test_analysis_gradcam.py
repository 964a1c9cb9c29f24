"""Grad-CAM / ROAD / grid on a tiny torchvision ResNet-18 (random init, 10 classes, 32x32, 4 images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")
pytest.importorskip("pytorch_grad_cam")

from optirep.analysis import gradcam as gc  # noqa: E402

# pytorch-grad-cam's ROAD imputer calls np.argwhere on torch tensors (library internals, harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # many small conv calls: with 2 threads on a shared 2-core box OpenMP barriers dominate (~30x)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    maps = gc.gradcam_maps(model, images, labels)
    return model, images, labels, maps


def test_maps_shape_range_and_mode_restored(setup):
    model, images, labels, maps = setup
    assert set(maps) == {"layer3", "layer4"}
    for m in maps.values():
        assert m.shape == (4, 32, 32) and m.dtype == np.float32
        assert np.all(np.isfinite(m)) and m.min() >= 0.0 and m.max() <= 1.0
    # layer3 is 2x2 with this stem: upsampled, min-max normalised maps reach ~1 somewhere
    assert maps["layer3"].max() > 0.9
    assert model.training  # the fixture's model was in train mode before the call


def test_maps_follow_the_given_labels_not_the_argmax(setup):
    model, images, labels, maps = setup
    other = gc.gradcam_maps(model, images, (labels + 5) % 10, layers=("layer3",))["layer3"]
    assert not np.allclose(other, maps["layer3"])
    again = gc.gradcam_maps(model, images, labels, layers=("layer3",))["layer3"]
    np.testing.assert_allclose(again, maps["layer3"], atol=1e-6)


def test_road_scores_finite_and_repeatable(setup):
    model, images, labels, maps = setup
    scores = gc.road_scores(model, images, labels, maps["layer3"])
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores, gc.road_scores(model, images, labels, maps["layer3"]))
    floor = gc.random_cam_floor(model, images, labels)
    assert set(floor) == {"layer3", "layer4"}
    assert all(f.shape == (4,) and np.all(np.isfinite(f)) for f in floor.values())
    with pytest.raises(ValueError, match=r"cams must have shape \[B, H, W\] = \(4, 32, 32\), got \(4, 16, 16\)"):
        gc.road_scores(model, images, labels, np.zeros((4, 16, 16), np.float32))


class _TopLeft(nn.Module):
    """Class-0 logit = mean of the top-left 12x12 patch: the true relevance map is known."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        v = self.w * x[:, :, :12, :12].mean((1, 2, 3))
        return torch.stack([v, -v], 1)


def test_road_rewards_the_right_map_and_punishes_the_inverted_one():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :12, :12] = 5.0
    yy, xx = np.mgrid[:32, :32]
    right = np.repeat((1 - np.hypot(yy, xx) / np.hypot(31, 31))[None], 2, 0).astype(np.float32)
    good = gc.road_scores(_TopLeft(), x, [0, 0], right)
    bad = gc.road_scores(_TopLeft(), x, [0, 0], 1 - right)
    assert np.all(good > 1.0) and np.all(bad < -1.0)


def test_grid_figure_written(setup, tmp_path):
    _, images, _, maps = setup
    out = gc.gradcam_grid(images, {"adamw": maps["layer3"], "v6": maps["layer4"]},
                          tmp_path / "figs" / "grid.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temp file left behind
    with pytest.raises(ValueError, match=r"maps for 'adamw' must have shape \(4, 32, 32\)"):
        gc.gradcam_grid(images, {"adamw": maps["layer3"][:2]}, tmp_path / "bad.png")


def test_unknown_layer_names_the_layer_and_the_choices(setup):
    model, images, labels, _ = setup
    with pytest.raises(ValueError, match=r"target layer 'layer9' not found in ResNet; top-level modules: .*'layer4'"):
        gc.gradcam_maps(model, images, labels, layers=("layer9",))
