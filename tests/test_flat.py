"""optim._flat: the compiled kernels see parameters of every rank as one 1-D signature (no recompiles).

    python -m pytest -q tests/test_flat.py
"""

from __future__ import annotations

import os

import pytest
import torch
from torch._dynamo.utils import counters

from optirep import optim
from optirep.optim import _flat
from optirep.optim._flat import Gathered, alias_1d, compile_cache_dir, partition


def test_alias_1d_shares_memory_without_being_a_view():
    x = torch.arange(12.0).reshape(3, 4)
    a = alias_1d(x)
    assert a.shape == (12,) and a._base is None and a.data_ptr() == x.data_ptr()
    a.mul_(2.0)
    assert torch.equal(x, torch.arange(12.0).reshape(3, 4) * 2)
    t = x.t()  # not contiguous: handed over as it is
    assert alias_1d(t) is t
    off = torch.arange(10.0)[4:]  # a storage offset is kept
    assert torch.equal(alias_1d(off), torch.arange(4.0, 10.0))


def test_gathered_sums_expand_and_scatter_per_tensor():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(3, 4), (5,), (1,), (2, 1, 3)]]
    b = Gathered([x.numel() for x in xs])
    flat = b.gather(xs)
    assert flat.shape == (24,)
    terms = torch.stack([flat, flat * flat])
    sums = b.sums(terms)
    assert sums.shape == (2, 4)
    torch.testing.assert_close(sums[0], torch.stack([x.sum() for x in xs]), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(sums[1], torch.stack([(x * x).sum() for x in xs]), rtol=1e-14, atol=1e-14)
    rows = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    assert torch.equal(b.expand(rows)[0], torch.tensor([1.0] * 12 + [2.0] * 5 + [3.0] + [4.0] * 6, dtype=torch.float64))
    versions = [x._version for x in xs]
    b.scatter(flat * 2, xs)  # written in place, in their own shapes, counted as in-place writes
    assert all(x._version > v for x, v in zip(xs, versions))
    assert [v.shape for v in b.split(flat, xs)] == [x.shape for x in xs]


def test_partition_by_size_and_dtype():
    xs = [torch.zeros(10), torch.zeros(200), torch.zeros(3, dtype=torch.float64), torch.zeros(5), torch.zeros(100)]
    big, buckets = partition(xs, threshold=100)
    assert big == [1, 4]
    assert [(idx, bk.sizes) for idx, bk in buckets] == [([0, 3], [10, 5]), ([2], [3])]
    assert partition(xs, threshold=0)[1] == []


@pytest.mark.parametrize("name", ["biostatis_v6", "neuroplastic"])
def test_compiled_kernels_compile_once_for_params_of_every_rank(name, monkeypatch):
    monkeypatch.setattr(_flat, "SMALL_NUMEL", 0)  # every tensor through the compiled kernels, none gathered
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in [(3, 2, 3, 3), (4,), (8, 4), (5, 1, 2)]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    opt = optim.build(name, params, compile=True, diag_every=0)
    before = counters["stats"]["unique_graphs"]
    versions = [p._version for p in params]
    for _ in range(3):
        opt.step()
    # two kernels (sensors/traces and update), one graph each, whatever the parameters' ranks
    assert counters["stats"]["unique_graphs"] - before == 2
    # writes through the aliases count as in-place writes of the parameters (autograd's saved-tensor check)
    if name == "biostatis_v6":
        assert all(p._version > v for p, v in zip(params, versions))


def test_v6_diagnostics_kernels_compile_in_the_first_step(monkeypatch):
    """The update kernels with the diagnostics' norms run every diag_every steps; they compile in step 1
    (excluded from timing), not in step diag_every."""
    from optirep.optim import biostatis

    monkeypatch.setattr(biostatis, "_WARMED", set())
    monkeypatch.setattr(_flat, "SMALL_NUMEL", 100)  # the 5120-element weight per tensor, the bias gathered
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in [(80, 64), (8,)]]
    opt = optim.build("biostatis_v6", params, compile=True, diag_every=3)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    opt.step()
    after_first = counters["stats"]["unique_graphs"]
    for _ in range(5):  # steps 3 and 6 record the extra-term share
        opt.step()
    assert counters["stats"]["unique_graphs"] == after_first
    assert "extra_share" in opt.diagnostics()


def test_compile_cache_dir_respects_the_users_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import importlib

    import optirep.optim._flat as flat

    flat = importlib.reload(flat)
    try:
        assert flat.compile_cache_dir() == str(tmp_path / "xdg" / "optirep" / "torchinductor")
        assert os.path.isdir(tmp_path / "xdg" / "optirep" / "torchinductor")
    finally:
        monkeypatch.undo()
        importlib.reload(flat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histc_counts_equal_torch_histc_including_values_on_bin_edges(dtype):
    from optirep.optim._base import AUTO_COMPILE_MIN_NUMEL
    from optirep.optim._flat import histc_counts

    g = torch.Generator().manual_seed(0)
    lo, hi = -3e-3, 5e-3
    parts = [torch.randn(AUTO_COMPILE_MIN_NUMEL // 2, generator=g, dtype=dtype) * 1e-3,
             torch.linspace(lo, hi, 100 * 64 + 1, dtype=dtype),  # every bin edge and the top edge itself
             (torch.randn(3, 5, 7, 11, generator=g, dtype=dtype) * 1e-3).clamp(lo, hi),
             torch.randn(AUTO_COMPILE_MIN_NUMEL // 2, generator=g, dtype=dtype).mul(1e-3).clamp(lo, hi)]
    parts[0] = parts[0].clamp(lo, hi)
    lo_t, hi_t = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
    counts = histc_counts(parts, lo_t, hi_t, 100)
    assert counts is not None and counts.dtype == dtype
    ref = sum(torch.histc(x, 100, lo, hi) for x in parts)
    assert torch.equal(counts, ref)
    # a non-finite range is left to torch.histc (which raises); small inputs stay on torch.histc
    assert histc_counts(parts, torch.tensor(float("nan"), dtype=dtype), hi_t, 100) is None
    assert histc_counts([parts[2]], lo_t, hi_t, 100) is None


def test_abs_tanh_agrees_with_tanh():
    from optirep.optim._flat import abs_tanh

    x = torch.cat([torch.linspace(-30, 30, 10001, dtype=torch.float64), torch.tensor([0.0, 1e-300, -1e-8, 1e300])])
    torch.testing.assert_close(abs_tanh(x), x.tanh().abs(), rtol=4e-16, atol=0)
    x32 = x.float()
    torch.testing.assert_close(abs_tanh(x32), x32.tanh().abs(), rtol=3e-7, atol=1e-30)
