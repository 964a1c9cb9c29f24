"""BiostatisV6 mechanisms: gains, clamps, importance branch, hand-computed step, flags, state, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from optirep import optim
from optirep.optim import _flat
from optirep.optim.biostatis import BiostatisV6

CIFAR = dict(lr=1e-3, weight_decay=1e-2, homeo_rate=0.5, coherence_target=0.8, energy_target=1e-4,
             lambda_energy=0.1)
GPT = dict(lr=2e-3, weight_decay=0.05, homeo_rate=0.03, coherence_target=0.85, energy_target=5e-4,
           lambda_energy=0.5, flip_threshold=0.15, ascent_strength=0.05, hierarchy="global")


def _params(scale, n_steps=3, dtype=torch.float32, foreach=None, **hp):
    torch.manual_seed(0)
    ps = [torch.randn(16, 8, dtype=dtype, requires_grad=True), torch.randn(8, dtype=dtype, requires_grad=True),
          torch.randn(4, 3, 3, 3, dtype=dtype, requires_grad=True)]
    opt = BiostatisV6(ps, foreach=foreach, **hp)
    for _ in range(n_steps):
        for p in ps:
            p.grad = torch.randn_like(p) * scale
        opt.step()
    return ps, opt


@pytest.mark.parametrize("foreach", [False, True])
def test_energy_gains_hit_their_clamps_under_huge_and_tiny_energy(foreach):
    _, opt = _params(1e3, foreach=foreach)  # E = 1e6 >> E*: e pushed down
    d = opt.diagnostics()
    assert d["e_local_mean"] == pytest.approx(0.85) and d["e_g"] == pytest.approx(0.925)
    assert d["e_mean"] == pytest.approx(0.3 * 0.925 + 0.7 * 0.85)
    # |tanh g| -> 1 > c*: the coherence gain drops below 1
    assert d["h_mean"] < 1.0
    _, opt = _params(1e-3, foreach=foreach, energy_target=1e4, lambda_energy=1.0)  # E* >> E: pushed up
    d = opt.diagnostics()
    assert d["e_local_mean"] == pytest.approx(1.15) and d["e_g"] == pytest.approx(1.075)


@pytest.mark.parametrize("foreach", [False, True])
def test_cifar_config_gives_constant_lr_multiplier(foreach):
    # Spec 1(d)1: small gradients keep C far below c*, so h ~ 1.28 and e ~ 1.0 throughout.
    _, opt = _params(1e-3, n_steps=5, foreach=foreach, **CIFAR)
    d = opt.diagnostics()
    assert d["h_mean"] == pytest.approx(0.3 * (1 + 0.25 * math.tanh(0.8)) + 0.7 * (1 + 0.5 * math.tanh(0.8)), abs=2e-3)
    assert d["h_mean"] == pytest.approx(1.28, abs=0.01)
    assert d["h_min"] > 1.27 and d["h_max"] < 1.29
    assert d["e_mean"] == pytest.approx(1.0, abs=1e-4)
    assert d["C_g"] < 2e-3


@pytest.mark.parametrize("foreach", [False, True])
def test_global_only_gpt_config_gain(foreach):
    _, opt = _params(1e-3, n_steps=5, foreach=foreach, **GPT)
    d = opt.diagnostics()
    assert d["h_mean"] == pytest.approx(1 + 0.03 * math.tanh(0.85), abs=1e-4)
    assert d["h_mean"] == pytest.approx(1.021, abs=1e-3)
    assert "h_local_mean" not in d and d["h_min"] == d["h_max"]


def _hand_step(p, g, lr=1e-2, wd=1e-2, tau=0.2, hierarchy="hierarchical", symmetric=False, true_ascent=False,
               bias_correct_extras=True, wd_scaled=False, rho=0.5, lam=0.1, c_star=0.8, e_star=1e-4):
    """The spec's formula for step t=1 on one tensor, in plain Python floats."""
    b1, b2, eps, d1, d2, w1, w2, kappa = 0.9, 0.999, 1e-8, 0.9, 0.99, 0.6, 0.4, 0.05
    n = len(g)
    m = [(1 - b1) * x for x in g]
    v = [(1 - b2) * x * x for x in g]
    F = [w1 * (1 - d1) * x + w2 * (1 - d2) * x for x in g]
    cos = sum(a * b for a, b in zip(m, g)) / (math.sqrt(sum(a * a for a in m)) * math.sqrt(sum(x * x for x in g)))
    if symmetric:
        gt = [x * (1 + 0.5 * math.tanh(cos)) for x in g]
    else:
        gt = [x * (1 + 0.5 * math.copysign(1.0, x) * math.tanh(cos)) for x in g]
    importance = (sum(abs(a) for a in m) / n) / (sum(math.sqrt(b) for b in v) / n + 1e-12)
    if importance < tau:
        r = kappa * (1 - math.exp(-0.02))
        gt = [a - r * x if true_ascent else a + r * x for a, x in zip(gt, g)]
    bc1, bc2 = 1 - b1, 1 - b2
    E = sum(x * x for x in g) / n
    C = sum(abs(math.tanh(x)) for x in g) / n
    if hierarchy == "global":
        h = 1 - rho * math.tanh(C - c_star)
        e = min(1.15, max(0.85, 0.8 * (1 + lam * (e_star - E)) + 0.2))
    else:
        h_g = 1 - 0.5 * rho * math.tanh(C - c_star)
        e_g = min(1.075, max(0.925, 0.9 * (1 + 0.5 * lam * (e_star - E)) + 0.1))
        h_l = 1 - rho * math.tanh(C - c_star)
        e_l = min(1.15, max(0.85, 0.8 * (1 + lam * (e_star - E)) + 0.2))
        h, e = 0.3 * h_g + 0.7 * h_l, 0.3 * e_g + 0.7 * e_l
    extra_scale = 1.0 if bias_correct_extras else bc1
    out = []
    for x, mi, vi, Fi, gi in zip(p, m, v, F, gt):
        denom = math.sqrt(vi) / math.sqrt(bc2) + eps
        decay = lr * wd * h * e if wd_scaled else lr * wd
        out.append(x * (1 - decay) - lr / bc1 * h * e * (mi / denom + extra_scale * (0.05 * Fi + 0.01 * gi)))
    return out, importance


FLAGS = [
    {},
    {"hierarchy": "global"},
    {"symmetric": True},
    {"tau": 5.0},
    {"tau": 5.0, "true_ascent": True},
    {"bias_correct_extras": False},
    {"wd_scaled": True},
]


@pytest.mark.parametrize("flags", FLAGS, ids=[",".join(f"{k}={v}" for k, v in f.items()) or "seed" for f in FLAGS])
@pytest.mark.parametrize("path", ["reference", "foreach"])
def test_single_step_matches_hand_computed_formula(flags, path):
    p0, g = [0.5, -1.0], [0.2, -0.05]
    expected, _ = _hand_step(p0, g, **flags)
    kw = dict(lr=1e-2, weight_decay=1e-2, homeo_rate=0.5, energy_target=1e-4, foreach=path == "foreach",
              hierarchy=flags.get("hierarchy", "hierarchical"), symmetric_polarity=flags.get("symmetric", False),
              true_ascent=flags.get("true_ascent", False), flip_threshold=flags.get("tau", 0.2),
              bias_correct_extras=flags.get("bias_correct_extras", True),
              wd_scaled_by_gains=flags.get("wd_scaled", False))
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = BiostatisV6([p], **kw)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=1e-13)


def test_importance_branch_fires_only_below_threshold():
    # At t=1, I = mean|m| / mean sqrt(v) = 0.1 / sqrt(0.001) = 3.162 for any gradient.
    _, importance = _hand_step([0.5, -1.0], [0.2, -0.05])
    assert importance == pytest.approx(0.1 / math.sqrt(0.001))
    results = {}
    for tau in (3.1, 3.2):
        for foreach in (False, True):
            p = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
            opt = BiostatisV6([p], lr=1e-2, flip_threshold=tau, foreach=foreach)
            p.grad = torch.tensor([0.2, -0.05], dtype=torch.float64)
            opt.step()
            results[tau, foreach] = p.detach().clone()
            assert opt.diagnostics()["ascent_fired_share"] == (1.0 if tau > importance else 0.0)
    torch.testing.assert_close(results[3.1, False], results[3.1, True], atol=1e-15, rtol=0)
    torch.testing.assert_close(results[3.2, False], results[3.2, True], atol=1e-15, rtol=0)
    assert not torch.allclose(results[3.1, False], results[3.2, False], atol=1e-9, rtol=0)
    # Fired: the "ascent" term is extra descent along g (spec 1(d)4): p moves further against g.
    delta = results[3.2, False] - results[3.1, False]
    assert torch.all(delta * torch.tensor([0.2, -0.05], dtype=torch.float64) < 0)


def test_symmetric_polarity_changes_only_negative_gradient_entries():
    # t=1: cos(m, g) = 1. Asymmetric g~ = g + 0.5 tanh(1)|g|, symmetric g~ = g (1 + 0.5 tanh(1)):
    # equal where g > 0, differ by tanh(1)|g| where g < 0 (times lr/bc1 h e 0.01).
    out = {}
    for sym in (False, True):
        p = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
        opt = BiostatisV6([p], lr=1e-2, homeo_rate=0.0, lambda_energy=0.0, symmetric_polarity=sym)
        p.grad = torch.tensor([0.2, -0.05], dtype=torch.float64)
        opt.step()
        out[sym] = p.detach()
    assert out[False][0] == out[True][0]
    expected = -(1e-2 / 0.1) * 0.01 * math.tanh(1.0) * 0.05  # sym - asym on the negative entry
    assert float(out[True][1] - out[False][1]) == pytest.approx(-expected, rel=1e-9)


def test_state_is_exactly_four_param_sized_tensors_and_step():
    ps, opt = _params(1e-2)
    for p in ps:
        st = opt.state[p]
        assert sorted(st) == ["exp_avg", "exp_avg_sq", "memory_ema_1", "memory_ema_2", "step"]
        assert st["step"] == 3 and isinstance(st["step"], int)
        assert all(st[k].shape == p.shape and st[k].dtype == p.dtype for k in st if k != "step")
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if isinstance(t, torch.Tensor))
    assert state_bytes == 4 * sum(p.numel() * p.element_size() for p in ps)


def test_bfloat16_state_is_float32_and_survives_resume():
    ps, opt = _params(1e-2, dtype=torch.bfloat16)
    sd = opt.state_dict()
    assert all(p.dtype == torch.bfloat16 for p in ps)
    assert all(opt.state[p]["exp_avg_sq"].dtype == torch.float32 for p in ps)
    opt2 = BiostatisV6(ps)
    opt2.load_state_dict(sd)
    for p in ps:
        for k in ("exp_avg", "exp_avg_sq", "memory_ema_1", "memory_ema_2"):
            assert opt2.state[p][k].dtype == torch.float32
            assert torch.equal(opt2.state[p][k], opt.state[p][k])


def test_diagnostics_keys_and_extra_share():
    _, opt = _params(1e-3, n_steps=4, diag_every=2, **CIFAR)
    d = opt.diagnostics()
    for key in ("C_g", "E_g", "h_g", "e_g", "h_local_mean", "e_local_mean", "h_mean", "e_mean",
                "ascent_fired_share", "extra_share", "extra_share_max"):
        assert key in d and key + "_mean" in d
    assert 0 < d["extra_share"] <= d["extra_share_max"] < 0.5


def test_mechanisms_off_gains_are_exactly_one():
    entry = optim.spec("biostatis_v6")
    _, opt = _params(1e-2, **{**entry.defaults, **entry.mechanisms_off})
    d = opt.diagnostics()
    assert d["h_mean"] == 1.0 and d["e_mean"] == 1.0 and d["h_g"] == 1.0 and d["e_g"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("small_numel", [0, 100, None])
def test_compiled_path_matches_reference_in_float64(small_numel, monkeypatch):
    """Every tensor through the compiled kernels (0), some gathered (100: the 8-element bias), all gathered."""
    if small_numel is not None:
        monkeypatch.setattr(_flat, "SMALL_NUMEL", small_numel)
    a, oa = _params(1e-1, n_steps=6, dtype=torch.float64, foreach=False, diag_every=2, flip_threshold=5.0)
    b, ob = _params(1e-1, n_steps=6, dtype=torch.float64, compile=True, diag_every=2, flip_threshold=5.0)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-10)
        for k in ("exp_avg", "exp_avg_sq", "memory_ema_1", "memory_ema_2"):
            torch.testing.assert_close(oa.state[p][k], ob.state[q][k], atol=1e-12, rtol=1e-10)
    da, db = oa.diagnostics(), ob.diagnostics()
    assert da.keys() == db.keys()
    for k in da:
        assert db[k] == pytest.approx(da[k], rel=1e-5, abs=1e-7), k
