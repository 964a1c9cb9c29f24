"""Planeswalker loss multiplexer: the seed's rule (checked against a scipy re-derivation), value
continuity under re-weighting, gradients, sum mode, state round-trip and name errors."""

from __future__ import annotations

import io

import pytest
import torch
from scipy.stats import linregress

from optirep.losses import Planeswalker


def _seed_weights(histories, scales, weights, base_window, window_step, rho):
    """The seed's weight step written out with scipy (the reference the vectorised OLS must match)."""
    slews = []
    for h, s in zip(histories, scales):
        h = [x * s for x in h]
        w = base_window
        while w <= len(h):
            line = linregress(range(w), h[-w:])
            if line.stderr < 5e-3:
                break
            w += window_step
        slews.append(abs(line.slope))
    tot = sum(slews)
    u = [x / tot if tot != 0 else 1 / len(slews) for x in slews]
    return [w + max(rho * (a - w), min(a - w, 1e-5)) for w, a in zip(weights, u)]


def test_weight_step_matches_scipy_reference():
    g = torch.Generator().manual_seed(0)
    pw = Planeswalker(["a", "b", "c"], base_window=6, window_step=3, pursuit_rate=0.3)
    hist = [[], [], []]
    for t in range(40):
        vals = torch.stack([2.0 - 0.03 * t + 0.05 * torch.randn((), generator=g),  # noisy, falling
                            1.0 + 0.001 * torch.randn((), generator=g),             # flat
                            3.0 * torch.exp(torch.tensor(-0.05 * t))]).double()      # smooth decay
        before = pw.weights.tolist()
        pw(dict(zip("abc", vals)))
        for h, v in zip(hist, vals.tolist()):
            h.append(v)
        scales = pw.scales.tolist()
        pw.step_weights()
        if len(hist[0]) >= 6:
            ref = _seed_weights(hist, scales, before, 6, 3, 0.3)
            assert pw.weights.tolist() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert pw.scales.tolist() == pytest.approx([1 / hist[0][0], 1 / hist[1][0], 1 / hist[2][0]])


def test_term_that_stops_changing_loses_weight():
    pw = Planeswalker(["moving", "stuck"], base_window=5, window_step=1, pursuit_rate=0.2)
    for t in range(60):
        pw({"moving": torch.tensor(5.0 - 0.05 * t), "stuck": torch.tensor(1.0)})
        pw.step_weights()
    w = pw.weights_dict()
    assert w["stuck"] < 0.01 and w["moving"] > 0.95


def test_value_does_not_jump_when_weights_change_and_gradient_is_weighted_sum():
    pw = Planeswalker(["x", "y"], base_window=3, window_step=1, pursuit_rate=0.5)
    p = torch.tensor([2.0, 1.0], dtype=torch.float64, requires_grad=True)
    prev_m = None
    for t in range(12):
        lx, ly = (p[0] - 1) ** 2, 3 * (p[1] + 2) ** 2
        w, s = pw.weights.clone(), pw.scales.clone() if t else 1 / torch.stack([lx, ly]).detach()
        m = pw({"x": lx, "y": ly})
        (gm,) = torch.autograd.grad(m, p, retain_graph=True)
        gx, = torch.autograd.grad(lx, p, retain_graph=True)
        gy, = torch.autograd.grad(ly, p)
        torch.testing.assert_close(gm, w[0] * s[0] * gx + w[1] * s[1] * gy)
        if prev_m is not None:
            # M_t - M_{t-1} is exactly this step's weighted scaled improvement: re-weighting adds nothing.
            expect = float((w * s * (torch.stack([lx, ly]).detach() - torch.tensor(prev_l, dtype=torch.float64))).sum())
            assert float(m) - prev_m == pytest.approx(expect, abs=1e-12)
        prev_m, prev_l = float(m), [float(lx), float(ly)]
        with torch.no_grad():
            p -= 0.05 * gm
        pw.step_weights()
    assert not torch.allclose(pw.weights, torch.full((2,), 0.5, dtype=torch.float64))


def test_sum_mode_is_plain_sum():
    pw = Planeswalker(["a", "b"], mode="sum")
    for t in range(20):
        a, b = torch.tensor(1.0 + t, requires_grad=True), torch.tensor(2.0 * t, requires_grad=True)
        out = pw({"a": a, "b": b})
        pw.step_weights()
        assert float(out) == float(a + b)
    assert pw.weights.tolist() == [0.5, 0.5]


def test_state_dict_round_trip_continues_identically():
    def feed(pw, ts):
        out = []
        for t in ts:
            out.append(float(pw({"a": torch.tensor(3.0 - 0.1 * t + 0.01 * (t % 3)), "b": torch.tensor(1.0 / (1 + t))})))
            pw.step_weights()
        return out

    kw = dict(base_window=4, window_step=2, log_length=10, pool_size=2)
    ref = Planeswalker(["a", "b"], **kw)
    full = feed(ref, range(30))
    a = Planeswalker(["a", "b"], **kw)
    feed(a, range(15))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = Planeswalker(["a", "b"], **kw)
    b.load_state_dict(torch.load(buf))
    assert feed(b, range(15, 30)) == full[15:]
    assert torch.equal(b.weights, ref.weights) and b.length == ref.length == 10


def test_missing_and_extra_terms_raise():
    pw = Planeswalker(["bce", "mse"])
    with pytest.raises(ValueError, match=r"missing terms \['mse'\], unknown terms \['l1'\]; expected exactly \['bce', 'mse'\]"):
        pw({"bce": torch.tensor(1.0), "l1": torch.tensor(1.0)})
    with pytest.raises(ValueError, match=r"Invalid mode: 'max' \(must be 'multiplex' or 'sum'\)"):
        Planeswalker(["a"], mode="max")
    with pytest.raises(ValueError, match=r"Invalid scale"):
        Planeswalker(["a", "b"], scale=[1.0])


def test_values_log_raw_scaled_weighted():
    pw = Planeswalker(["a", "b"], scale=[2.0, 0.5])
    pw({"a": torch.tensor(3.0), "b": torch.tensor(4.0)})
    v = pw.values()
    assert v["a/raw"] == 3.0 and v["a/scaled"] == 6.0 and v["a/weighted"] == 3.0 and v["b/weight"] == 0.5


def test_all_flat_terms_pursue_uniform_weights_not_nan():
    """Deviation from the seed: every slope exactly 0 gives targets 1/n (the seed's 0/0 makes the weights NaN)."""
    pw = Planeswalker(["a", "b", "c"], base_window=3, window_step=1, pursuit_rate=0.5, scale=[1.0, 1.0, 1.0])
    pw.weights.copy_(torch.tensor([0.5, 0.3, 0.2], dtype=pw.weights.dtype))
    for _ in range(5):
        pw({"a": torch.tensor(2.0), "b": torch.tensor(1.0), "c": torch.tensor(0.5)})
        pw.step_weights()
    # three weight steps (histories of length 3, 4, 5), each w <- w + 0.5 (1/3 - w)
    expect = [1 / 3 + (w0 - 1 / 3) * 0.5 ** 3 for w0 in (0.5, 0.3, 0.2)]
    assert pw.weights.tolist() == pytest.approx(expect, rel=1e-12)
