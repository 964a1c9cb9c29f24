"""Splits, subsets, augmentation and the embedded datasets (digits8, digits32, mnist1d)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from optirep.data import augment, load
from optirep.data.splits import carve_val, resolve_size, train_subset


def _labels(n_per_class=(50, 30, 20)):
    return np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])[np.random.default_rng(0).permutation(sum(n_per_class))]


def test_carve_val_is_stratified_disjoint_and_exact():
    y = _labels()
    tr, val = carve_val(y, 10, seed=0)
    assert len(val) == 10 and len(tr) == 90
    assert np.intersect1d(tr, val).size == 0 and np.union1d(tr, val).size == 100
    assert np.bincount(y[val]).tolist() == [5, 3, 2]
    assert np.all(np.diff(val) > 0) and np.all(np.diff(tr) > 0)
    np.testing.assert_array_equal(carve_val(y, 0.1, seed=0)[1], val)
    assert not np.array_equal(carve_val(y, 10, seed=1)[1], val)


def test_train_subset_fraction_and_per_class():
    y = _labels()
    a = train_subset(y, 0.5, None, seed=3)
    np.testing.assert_array_equal(a, train_subset(y, 0.5, None, seed=3))
    assert np.bincount(y[a]).tolist() == [25, 15, 10]
    assert not np.array_equal(a, train_subset(y, 0.5, None, seed=4))
    b = train_subset(y, None, 4, seed=3)
    assert np.bincount(y[b]).tolist() == [4, 4, 4] and np.all(np.diff(b) > 0)
    assert np.bincount(y[train_subset(y, 0.01, None, seed=0)]).tolist() == [1, 1, 1]
    np.testing.assert_array_equal(train_subset(y, 1.0, None, 0), np.arange(100))
    with pytest.raises(ValueError, match="train_fraction must be in \\(0, 1\\], got 1.5"):
        train_subset(y, 1.5, None, 0)
    with pytest.raises(ValueError, match="give train_fraction or per_class, not both"):
        train_subset(y, 0.5, 3, 0)


def test_resolve_size_errors():
    assert resolve_size(0.25, 40, "val_size") == 10 and resolve_size(7, 40, "val_size") == 7
    with pytest.raises(ValueError, match=r"val_size as a float is a fraction in \[0, 1\), got 1.5"):
        resolve_size(1.5, 40, "val_size")
    with pytest.raises(ValueError, match=r"val_size must be in \[0, 40\]"):
        resolve_size(41, 40, "val_size")
    with pytest.raises(TypeError, match="val_size must be an int count or a float fraction"):
        resolve_size("10", 40, "val_size")


def test_digits_reader_matches_sklearn():
    from sklearn.datasets import load_digits

    from optirep.data.formats import digits

    x, y = digits()
    ref = load_digits()
    np.testing.assert_array_equal(x, ref.images.astype(np.float32))
    np.testing.assert_array_equal(y, ref.target)


def test_digits8_and_digits32():
    d8 = load("digits8")
    assert d8.train.x.shape[1:] == (1, 8, 8) and d8.info["input_shape"] == (1, 8, 8)
    assert len(d8.train) + len(d8.val) + len(d8.test) == 1797 and len(d8.test) == 360
    d32 = load("digits32", augment=True)
    assert d32.train.x.shape[1:] == (3, 32, 32) and d32.info["input_shape"] == (3, 32, 32)
    assert d32.train.x.dtype == torch.float32 and d32.train.y.dtype == torch.long
    x = d32.train.x
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    torch.testing.assert_close(x[:, 0], x[:, 2])
    # same images, same split: the 32x32 version is the upsampled 8x8 one
    torch.testing.assert_close(d32.train.y, d8.train.y)
    up = torch.nn.functional.interpolate(d8.train.x[:4] * 0.5 + 0.5, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:4, :1], (up.clamp(0, 1) - 0.5) / 0.5)
    assert d32.info["augment"] == "crop_flip" and d32.info["num_classes"] == 10
    with pytest.raises(ValueError, match="augment=True is only defined for"):
        load("digits8", augment=True)


def test_load_subsets_are_deterministic_and_disjoint_from_val():
    a = load("digits8", seed=1, train_fraction=0.25)
    b = load("digits8", seed=1, train_fraction=0.25)
    c = load("digits8", seed=2, train_fraction=0.25)
    torch.testing.assert_close(a.train.x, b.train.x)
    assert not torch.equal(a.train.x, c.train.x)
    torch.testing.assert_close(a.val.x, c.val.x)  # val fixed by split_seed, not the run seed
    assert torch.bincount(a.train.y).min() >= 28
    flat = lambda s: {tuple(r) for r in s.x.flatten(1).tolist()}  # noqa: E731
    full = load("digits8")
    assert not flat(full.train) & flat(full.val) and not flat(full.val) & flat(full.test)
    pc = load("digits8", per_class=5, subset_seed=9)
    assert torch.bincount(pc.train.y).tolist() == [5] * 10 and pc.info["subset"]["subset_seed"] == 9


def test_mnist1d_offline_shapes_cache_and_rng(tmp_path):
    py, npst, tst = random.getstate(), np.random.get_state(), torch.get_rng_state()
    s = load("mnist1d", root=tmp_path)
    assert random.getstate() == py and np.array_equal(np.random.get_state()[1], npst[1])
    assert torch.equal(torch.get_rng_state(), tst)
    assert s.train.x.shape == (3600, 40) and s.val.x.shape == (400, 40) and s.test.x.shape == (1000, 40)
    assert s.info["kind"] == "vector" and s.info["input_shape"] == (40,) and s.info["num_classes"] == 10
    assert (tmp_path / "mnist1d" / "mnist1d_seed42.npz").is_file()
    again = load("mnist1d", root=tmp_path)  # from the cache
    torch.testing.assert_close(again.test.x, s.test.x)
    assert abs(float(torch.cat([s.train.x, s.val.x]).std()) - 1.0) < 0.1


def _brute_force_match(out, x, fill, pad=4):
    """Which (dy, dx, flip) of the padded image gives `out`; None if none does."""
    c, h, w = x.shape
    padded = torch.empty(c, h + 2 * pad, w + 2 * pad).copy_(torch.as_tensor(fill).reshape(-1, 1, 1).expand(c, h + 2 * pad, w + 2 * pad))
    padded[:, pad:pad + h, pad:pad + w] = x
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flip in (False, True):
                if torch.equal(crop.flip(2) if flip else crop, out):
                    return dy, dx, flip
    return None


def test_augment_is_crop_and_flip_and_deterministic():
    x = torch.randn(16, 3, 12, 12)
    fill = [-1.0, -2.0, -3.0]
    out = augment(x, "crop_flip", torch.Generator().manual_seed(5), fill=fill)
    again = augment(x, "crop_flip", torch.Generator().manual_seed(5), fill=fill)
    assert torch.equal(out, again) and out.shape == x.shape
    found = [_brute_force_match(out[i], x[i], fill) for i in range(16)]
    assert all(f is not None for f in found)
    assert len({f[:2] for f in found}) > 3 and {f[2] for f in found} == {False, True}
    other = augment(x, "crop_flip", torch.Generator().manual_seed(6), fill=fill)
    assert not torch.equal(out, other)
    flipped = augment(x, "flip", torch.Generator().manual_seed(0))
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2)) for i in range(16))
    assert augment(x, "none", None) is x
    with pytest.raises(ValueError, match=r"unknown kind 'cutout'; known: \['none', 'flip', 'crop', 'crop_flip'\]"):
        augment(x, "cutout", None)
    with pytest.raises(ValueError, match="fill must be a scalar or 3 values"):
        augment(x, "crop", None, fill=[0.0, 1.0])
