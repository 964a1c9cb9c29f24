"""NeuroPlastic: hand-computed steps, gates, stabiliser and each design-space variant's defining property.

    pytest -q tests/test_neuroplastic.py
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

from optirep import optim
from optirep.optim import _flat
from optirep.optim.neuroplastic import NeuroPlastic

EPS = 1e-8
STAB_OFF = {"max_update_norm": math.inf, "adaptation_rate": 0.0}


def _steps(grads, p0, foreach=None, epochs=None, **hp):
    """Run NeuroPlastic on one float64 tensor through the given gradients; return (params, optimizer)."""
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = NeuroPlastic([p], foreach=foreach, **hp)
    for i, g in enumerate(grads):
        if epochs is not None:
            opt.set_epoch(epochs[i])
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach(), opt


def _stabilise(u, max_norm=1.0, target=0.02, rate=0.01):
    n = math.sqrt(sum(x * x for x in u))
    if n > max_norm:
        u = [x * max_norm / (n + EPS) for x in u]
    rms = math.sqrt(sum(x * x for x in u) / len(u) + EPS)
    gain = min(max(1 + rate * (target - rms), 0.5), 1.5)
    return [x * gain for x in u]


def _clip(x, lo, hi):
    return min(max(x, lo), hi)


G1 = [0.3, -1.2, 0.05, 2.5, -0.7]
P0 = [0.5, -0.25, 1.0, 0.0, 2.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_classic_single_step_matches_hand_computation(foreach):
    lr, wd, ps = 0.1, 0.05, 2.0
    p, _ = _steps([G1], P0, foreach=foreach, lr=lr, weight_decay=wd, plasticity_scale=ps)
    absg = [abs(x) for x in G1]
    mg = sum(absg) / len(absg)
    G = [x / (mg + EPS) for x in absg]
    a = [0.05 * x for x in absg]
    ma = sum(a) / len(a)
    act = [x / (ma + EPS) for x in a]
    ratio = [abs(0.1 * x) / (math.sqrt(0.01 * x * x) + EPS) for x in G1]
    mr = sum(ratio) / len(ratio)
    mem = [x / (mr + EPS) for x in ratio]
    alpha_g = [_clip(x, 0.2, 2.0) for x in G]
    alpha_f = [_clip(0.4 * x + 0.4 * y + 0.2 * z, 0.2, 2.0) for x, y, z in zip(act, G, mem)]
    alpha = [ag + ps * (af - ag) for ag, af in zip(alpha_g, alpha_f)]
    assert max(abs(x - y) for x, y in zip(alpha, alpha_g)) > 0.1, "the mixing must matter in this example"
    u = _stabilise([al * g + wd * w for al, g, w in zip(alpha, G1, P0)])
    expect = torch.tensor([w - lr * x for w, x in zip(P0, u)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-13, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_gradonly_single_step_matches_hand_computation_and_differs_from_full_clamp(foreach):
    lr = 0.1
    p, opt = _steps([G1], P0, foreach=foreach, **{**optim.spec("neuroplastic_gradonly").defaults, "lr": lr})
    assert (opt.defaults["amin"], opt.defaults["amax"]) == (0.5, 1.5)
    mg = sum(abs(x) for x in G1) / len(G1)
    alpha = [_clip(abs(x) / (mg + EPS), 0.5, 1.5) for x in G1]
    u = _stabilise([al * g for al, g in zip(alpha, G1)])
    expect = torch.tensor([w - lr * x for w, x in zip(P0, u)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-13, rtol=0)
    assert not opt.state[opt.param_groups[0]["params"][0]].keys() - {"step"}, "grad-only needs no trace state"
    # the full method's internal alpha_g uses [0.2, 2.0]: the same ablation there is a different step
    wide, _ = _steps([G1], P0, foreach=foreach, lr=lr, mode="ablation_grad_only")
    assert (wide - p).abs().max() > 1e-3


def test_alpha_goes_negative_with_plasticity_scale_2_and_diagnostics_show_it():
    # an MLP on minibatches, the locked config after warm-up (the spec measured alpha in about -0.02..3.8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.build("neuroplastic", model.parameters(), lr=0.1, plasticity_scale=2.0, diag_every=1)
    x = torch.randn(512, 64)
    y = x[:, :10].argmax(1)
    lo, frac_neg, hi = [], [], []
    for _ in range(40):
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        d = opt.diagnostics()
        lo.append(d["alpha_min"])
        hi.append(d["alpha_max"])
        frac_neg.append(d["alpha_frac_negative"])
        assert d["alpha_q01"] <= d["alpha_q50"] <= d["alpha_q99"]
        assert d["alpha_min"] <= d["alpha_q01"] and d["alpha_q99"] <= d["alpha_max"]
    assert min(lo) < 0.0 and max(frac_neg) > 0.0, "alpha = 2 alpha_f - alpha_g should dip below 0"
    assert max(hi) > 2.0 and max(hi) <= 3.8 + 1e-6, "alpha exceeds amax but stays within 2 amax - amin"
    assert d["alpha_frac_outside"] > 0.0


def test_warmup_gate_blends_alpha_by_epoch():
    grads = [G1, [x * -0.5 + 0.1 for x in G1], [x * 1.5 for x in G1]]
    hp = dict(lr=0.1, plasticity_scale=2.0, **STAB_OFF)
    # epoch 1 of a 2-epoch warm-up: alpha = alpha_g, i.e. the ablation with the same clamp
    warm, _ = _steps(grads, P0, epochs=[1, 1, 1], warmup_epochs=2, **hp)
    abl, _ = _steps(grads, P0, mode="ablation_grad_only", **hp)
    torch.testing.assert_close(warm, abl, atol=1e-14, rtol=0)
    # after the warm-up: the full coefficient
    late, _ = _steps(grads, P0, epochs=[3, 3, 3], warmup_epochs=2, **hp)
    full, _ = _steps(grads, P0, warmup_epochs=0, **hp)
    torch.testing.assert_close(late, full, atol=1e-14, rtol=0)
    # halfway (epoch 2 of 2): gate 1/2 times ps 2 = alpha_f exactly, neither of the above
    mid, _ = _steps(grads, P0, epochs=[2, 2, 2], warmup_epochs=2, **hp)
    ps1, _ = _steps(grads, P0, **{**hp, "plasticity_scale": 1.0})
    torch.testing.assert_close(mid, ps1, atol=1e-14, rtol=0)
    assert (mid - full).abs().max() > 1e-4 and (mid - abl).abs().max() > 1e-4


@pytest.mark.parametrize("foreach", [False, True])
def test_stabiliser_clips_update_norm(foreach):
    big = [10.0 * x for x in G1]
    p, _ = _steps([big], P0, foreach=foreach, lr=1.0, max_update_norm=0.5, adaptation_rate=0.0)
    step = (p - torch.tensor(P0, dtype=torch.float64)).norm()
    assert step == pytest.approx(0.5, rel=1e-7)
    free, _ = _steps([big], P0, foreach=foreach, lr=1.0, **STAB_OFF)
    assert (free - torch.tensor(P0, dtype=torch.float64)).norm() > 5.0


def _model_run(name, steps=4, seed=0, **hp):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    opt = optim.build(name, model.parameters(), **{"diag_every": 1, **hp})
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    deltas = []
    for _ in range(steps):
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        deltas.append([(p.detach() - b, gr) for p, b, gr in zip(model.parameters(), before, grads)])
    return deltas, opt


def _assert_same_steps_and_state(ref, o_ref, other, o_other):
    """The last step's parameter deltas and every state tensor agree (float64 rounding)."""
    for (a, _), (b, _) in zip(ref[-1], other[-1]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    for sa, sb in zip(o_ref.state.values(), o_other.state.values()):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", ["global", "layerwise", "classifier_only"])
def test_lr_controller_scales_lr_only_within_bounds(mode):
    hp = dict(lr=0.1, plasticity_scale=2.0, **STAB_OFF)
    base, _ = _model_run("neuroplastic", **hp)
    ctl, opt = _model_run("neuroplastic_lrctl", lr_controller_mode=mode, lr_controller_strength=5.0, **hp)
    d = opt.diagnostics()
    assert 0.8 <= d["lr_multiplier"] <= 1.2
    mults = []
    # first step: same gradient, so the controlled step is the classic step times one scalar per tensor
    for i, ((dc, _), (db, _)) in enumerate(zip(ctl[0], base[0])):
        ratio = dc / db
        r = float(ratio.flatten()[0])
        torch.testing.assert_close(ratio, torch.full_like(ratio, r), atol=1e-8, rtol=0)
        assert 0.8 - 1e-12 <= r <= 1.2 + 1e-12
        mults.append(r)
    n = len(mults)
    if mode == "classifier_only":
        assert mults[: n - 2] == [1.0] * (n - 2)
    if mode == "global":
        assert max(mults) - min(mults) < 1e-9
    assert any(abs(m - 1.0) > 1e-3 for m in mults), "with strength 5 the controller must move the LR"


def test_bounded_residual_is_g_plus_r_with_r_at_most_half_g():
    deltas, _ = _model_run("neuroplastic_residual", lr=0.1, plasticity_scale=2.0, **STAB_OFF)
    binds = 0
    for step in deltas[1:]:
        for d, g in step:
            r = -d / 0.1 - g
            assert r.norm() <= 0.5 * g.norm() * (1 + 1e-9)
            binds += bool(r.norm() > 0.49 * g.norm())
    assert binds > 0, "with ps=2 the 0.5 ||g|| bound should bind somewhere"


def test_orthogonal_residual_is_orthogonal_to_g():
    # eps also regularises the projection (q.g / (g.g + eps)): a tiny eps makes orthogonality exact
    deltas, _ = _model_run("neuroplastic_orthogonal", lr=0.1, plasticity_scale=2.0, match_grad_norm=True, eps=1e-30,
                           **STAB_OFF)
    for step in deltas[1:]:
        for d, g in step:
            q = -d / 0.1 - g
            assert abs(float((q * g).sum())) <= 1e-9 * float(g.norm() * q.norm())
            assert q.norm() == pytest.approx(0.1 * float(g.norm()), rel=1e-6)  # lambda ||g|| with match_grad_norm


@pytest.mark.parametrize("name,base", [("neuroplastic_hybrid_adamw", "adamw"), ("neuroplastic_hybrid_sgd", "sgd")])
def test_hybrid_is_base_plus_bounded_modulation(name, base):
    hp = dict(lr=0.01, plasticity_scale=2.0, **STAB_OFF)
    plain, _ = _model_run(name, **{**hp, "modulation_strength": 0.0})
    mod, _ = _model_run(name, **hp)
    d0 = [d for d, _ in plain[0]]
    d1 = [d for d, _ in mod[0]]
    assert any((a - b).norm() > 1e-8 for a, b in zip(d0, d1))
    for a, b in zip(d0, d1):
        assert (b - a).norm() <= 0.25 * a.norm() * (1 + 1e-9)
    if base == "adamw":  # first Adam step is lr * sign(g) (up to eps): norm lr sqrt(n)
        for a, (_, g) in zip(d0, plain[0]):
            torch.testing.assert_close(a, -0.01 * torch.sign(g), atol=1e-5, rtol=0)


def test_hybrid_adamw_direction_is_clipped_to_unit_norm_by_the_stabiliser():
    deltas, opt = _model_run("neuroplastic_hybrid_adamw", lr=0.01)
    for d, _ in deltas[-1]:
        if d.numel() > 1:
            assert d.norm() <= 0.01 * (1 + 1e-6)
    assert opt.diagnostics()["update_clip_frac"] > 0.5


def test_phase_gates_follow_the_seed_bug_unless_total_epochs_is_set():
    hp = dict(lr=0.01, plasticity_scale=2.0, phase_scope="late", **STAB_OFF)
    plain, _ = _model_run("neuroplastic_hybrid_sgd", **{**hp, "modulation_strength": 0.0})
    buggy, _ = _model_run("neuroplastic_hybrid_sgd", **hp)  # T = 1: epoch 1 counts as "late"
    fixed, _ = _model_run("neuroplastic_hybrid_sgd", total_epochs=10, **hp)  # epoch 1 of 10: not late
    diff = lambda a, b: max(float((x - y).abs().max()) for (x, _), (y, _) in zip(a[0], b[0]))  # noqa: E731
    assert diff(buggy, plain) > 1e-8
    assert diff(fixed, plain) == 0.0


def test_set_epoch_and_total_epochs_survive_state_dict():
    p = torch.zeros(3, requires_grad=True)
    opt = optim.build("neuroplastic", [p], warmup_epochs=2)
    opt.set_epoch(3)
    opt.set_total_epochs(10)
    p.grad = torch.ones(3)
    opt.step()
    q = torch.zeros(3, requires_grad=True)
    other = optim.build("neuroplastic", [q], warmup_epochs=2)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["epoch"] == 3 and other.param_groups[0]["total_epochs"] == 10
    with pytest.raises(ValueError, match=r"Invalid epoch: -1 \(must be an int >= 0\)"):
        opt.set_epoch(-1)


@pytest.mark.parametrize("name,expect", [("neuroplastic", 3), ("neuroplastic_gradonly", 0),
                                         ("neuroplastic_hybrid_adamw", 5), ("neuroplastic_hybrid_sgd", 4)])
def test_state_is_allocated_per_mode(name, expect):
    p = torch.zeros(4, 5, requires_grad=True)
    opt = optim.build(name, [p])
    p.grad = torch.randn(4, 5)
    opt.step()
    nbytes = sum(v.numel() * v.element_size() for v in opt.state[p].values() if v.dim() > 0)
    assert nbytes == expect * p.numel() * p.element_size()


@pytest.mark.parametrize("name,hp", [
    ("neuroplastic", {"weight_decay": 0.05}),
    ("neuroplastic", {"weight_decay": 0.05, "decoupled_weight_decay": True, "parameterwise": False}),
    ("neuroplastic_gradonly", {"weight_decay": 0.01, "parameterwise": False}),
    ("neuroplastic_lrctl", {"lr_controller_mode": "layerwise", "lr_controller_strength": 3.0, "weight_decay": 0.01}),
    ("neuroplastic_lrctl", {"lr_controller_mode": "classifier_only", "decoupled_weight_decay": True,
                            "weight_decay": 0.01}),
    ("neuroplastic_residual", {"weight_decay": 0.01, "residual_max_ratio": 0.2}),
    ("neuroplastic_orthogonal", {"match_grad_norm": True, "orthogonal_schedule": "cosine", "total_epochs": 3}),
    ("neuroplastic_hybrid_adamw", {"hybrid_target": "trust_ratio", "weight_decay": 0.01, "layer_scope": "late_blocks"}),
    ("neuroplastic_hybrid_adamw", {"hybrid_target": "momentum", "modulation_strength": 1.0}),
    ("neuroplastic_hybrid_sgd", {"hybrid_target": "momentum", "weight_decay": 0.01, "lr_controller_mode": "global"}),
])
def test_fast_path_matches_reference_on_more_options(name, hp):
    hp = {"lr": 0.05, "plasticity_scale": 2.0, **hp}
    ref, o_ref = _model_run(name, steps=6, foreach=False, **hp)
    fast, o_fast = _model_run(name, steps=6, foreach=True, **hp)
    _assert_same_steps_and_state(ref, o_ref, fast, o_fast)
    da, db = o_ref.diagnostics(), o_fast.diagnostics()
    assert da.keys() == db.keys()
    for k in da:
        assert da[k] == pytest.approx(db[k], rel=1e-5, abs=1e-6), k


def test_diagnostics_only_every_diag_every_steps():
    _, opt = _model_run("neuroplastic", steps=1)
    assert "alpha_min" in opt.diagnostics()
    p = torch.zeros(3, requires_grad=True)
    opt = optim.build("neuroplastic", [p], diag_every=3)
    for _ in range(2):
        p.grad = torch.randn(3)
        opt.step()
    assert opt.diagnostics().get("alpha_min_mean") is not None  # step 1 recorded
    p.grad = torch.randn(3)
    opt.step()  # step 3 is not a diagnostic step (1, 4, 7, ...)
    assert opt.diagnostics() == {}


@pytest.mark.slow
@pytest.mark.parametrize("name,hp", [
    ("neuroplastic", {"warmup_epochs": 2, "weight_decay": 0.05}),
    ("neuroplastic", {"weight_decay": 0.05, "decoupled_weight_decay": True}),
    ("neuroplastic_gradonly", {"weight_decay": 0.01}),
    ("neuroplastic_gradonly", {}),
])
@pytest.mark.parametrize("small_numel", [0, 20, None])
def test_compiled_classic_path_matches_reference_in_float64(name, hp, small_numel, monkeypatch):
    """compile=True: the fused kernels (classic rule, no controller) give the reference's params and state,
    with every tensor through the per-tensor kernels (0), some gathered (20), or all gathered."""
    if small_numel is not None:
        monkeypatch.setattr(_flat, "SMALL_NUMEL", small_numel)
    hp = {"lr": 0.05, "plasticity_scale": 2.0, "diag_every": 3, **hp}
    ref, o_ref = _model_run(name, steps=6, foreach=False, **hp)
    comp, o_comp = _model_run(name, steps=6, compile=True, **hp)
    _assert_same_steps_and_state(ref, o_ref, comp, o_comp)


def test_compile_setting_is_validated_and_auto_leaves_small_groups_on_foreach():
    from optirep.optim import _base

    with pytest.raises(ValueError, match=r"Invalid compile: 'yes' \(must be True, False or 'auto'\)"):
        optim.build("neuroplastic", [torch.zeros(2, requires_grad=True)], compile="yes")
    cpu = torch.device("cpu")
    assert _base.use_compiled("auto", _base.AUTO_COMPILE_MIN_NUMEL - 1, cpu) is False
    assert _base.use_compiled(False, 10 ** 9, cpu) is False
    assert _base.use_compiled(True, 1, cpu) is True


# ---------------------------------------------------------------- the seed's design-space details (issue #14)
def _first_alphas(g, ps=2.0, amin=0.2, amax=2.0):
    """(alpha_g, alpha) of a first step on gradient g (zero traces), as the Math section reads."""
    absg = [abs(x) for x in g]
    mg = sum(absg) / len(absg)
    G = [x / (mg + EPS) for x in absg]
    a = [0.05 * x for x in absg]
    act = [x / (sum(a) / len(a) + EPS) for x in a]
    ratio = [abs(0.1 * x) / (math.sqrt(0.01 * x * x) + EPS) for x in g]
    mem = [x / (sum(ratio) / len(ratio) + EPS) for x in ratio]
    alpha_g = [_clip(x, amin, amax) for x in G]
    alpha_f = [_clip(0.4 * x + 0.4 * y + 0.2 * z, amin, amax) for x, y, z in zip(act, G, mem)]
    return alpha_g, [ag + ps * (af - ag) for ag, af in zip(alpha_g, alpha_f)]


def _dot(x, y):
    return sum(a * b for a, b in zip(x, y))


def _orth(g, ps=2.0):
    """The orthogonal residual's q (before lambda and the schedule) of a first step, by hand."""
    alpha_g, alpha = _first_alphas(g, ps)
    q = [(a - b) * x for a, b, x in zip(alpha, alpha_g, g)]
    c = _dot(q, g) / (_dot(g, g) + EPS)
    return [x - c * y for x, y in zip(q, g)]


def _sigma(g, ps=2.0):
    alpha_g, alpha = _first_alphas(g, ps)
    return sum(math.log(max(a, 1e-8) / max(b, 1e-8)) for a, b in zip(alpha, alpha_g)) / len(g)


# seven tensors of three elements: a body of five (odd) and a two-tensor "classifier"
GS7 = [[0.3 * (i + 1), -1.2 + 0.4 * i * i / 7, 0.05 * (i + 2) ** 2] for i in range(7)]


def _step_many(gs, foreach, groups=None, **hp):
    ps = [torch.full((len(g),), 0.5, dtype=torch.float64, requires_grad=True) for g in gs]
    spec = [{"params": [ps[i] for i in idx]} for idx in groups] if groups else ps
    opt = NeuroPlastic(spec, foreach=foreach, **hp)
    for p, g in zip(ps, gs):
        p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return [p.detach() for p in ps], opt


@pytest.mark.parametrize("foreach", [False, True])
def test_odd_body_middle_tensor_counts_as_early_for_the_layerwise_controller(foreach):
    """Seed: early_blocks = body index < ceil(5/2) = 3, so tensor 2 shares the early tensors' multiplier."""
    lr, k = 0.1, 1.0
    ps, _ = _step_many(GS7, foreach, lr=lr, plasticity_scale=2.0, lr_controller_mode="layerwise",
                       lr_controller_strength=k, **STAB_OFF)
    sig = [_sigma(g) for g in GS7]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    mult = [_clip(1 + k * mean(sig[0:3]), 0.8, 1.2)] * 3 + [_clip(1 + k * mean(sig[3:5]), 0.8, 1.2)] * 2 \
        + [_clip(1 + k * mean(sig[5:7]), 0.8, 1.2)] * 2
    assert len({round(m, 12) for m in mult}) == 3, "the example must give three distinct multipliers"
    for p, g, m in zip(ps, GS7, mult):
        _, alpha = _first_alphas(g)
        expect = torch.tensor([0.5 - lr * m * a * x for a, x in zip(alpha, g)], dtype=torch.float64)
        torch.testing.assert_close(p, expect, atol=1e-14, rtol=0)


@pytest.mark.parametrize("scope,modulated", [("early_blocks", [0, 1, 2]), ("late_blocks", [2, 3, 4]),
                                             ("classifier", [5, 6])])
@pytest.mark.parametrize("foreach", [False, True])
def test_odd_body_middle_tensor_is_in_both_layer_scopes(foreach, scope, modulated):
    """Seed: early_blocks = index < ceil(B/2), late_blocks = floor(B/2) <= index < B."""
    hp = dict(lr=0.01, plasticity_scale=2.0, update_rule="hybrid", hybrid_base="sgd_momentum", **STAB_OFF)
    plain, _ = _step_many(GS7, foreach, **{**hp, "modulation_strength": 0.0})
    mod, _ = _step_many(GS7, foreach, layer_scope=scope, **hp)
    for i, (a, b, g) in enumerate(zip(plain, mod, GS7)):
        if i not in modulated:
            assert torch.equal(a, b), (scope, i)
            continue
        # first SGD-momentum step: base = g; delta = 0.15 (alpha - 1) g, clipped to 0.25 ||g||
        _, alpha = _first_alphas(g)
        delta = [0.15 * (al - 1) * x for al, x in zip(alpha, g)]
        dn, lim = math.sqrt(_dot(delta, delta)), 0.25 * math.sqrt(_dot(g, g))
        if dn > lim:
            delta = [x * lim / (dn + 1e-12) for x in delta]
        expect = torch.tensor([0.5 - 0.01 * (x + d) for x, d in zip(g, delta)], dtype=torch.float64)
        torch.testing.assert_close(b, expect, atol=1e-14, rtol=0)


def test_orthogonal_late_schedule_is_the_seeds_linear_ramp():
    p = torch.zeros(2, requires_grad=True)
    opt = NeuroPlastic([p], update_rule="orthogonal_residual", orthogonal_schedule="late", total_epochs=10)
    expect = {1: 0.0, 3: 0.0, 4: 0.1 / 0.7, 6: 0.3 / 0.7, 10: 1.0, 12: 1.0}
    for epoch, gate in expect.items():
        opt.set_epoch(epoch)
        assert NeuroPlastic._orthogonal_gate(opt.param_groups[0]) == pytest.approx(gate, abs=1e-15), epoch
    opt.param_groups[0]["orthogonal_late_start"] = 0.5
    opt.set_epoch(8)
    assert NeuroPlastic._orthogonal_gate(opt.param_groups[0]) == pytest.approx(0.6, abs=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_orthogonal_step_uses_the_ramped_lambda(foreach):
    lr, lam = 0.1, 0.4
    p, _ = _steps([G1], P0, foreach=foreach, epochs=[4], lr=lr, plasticity_scale=2.0, update_rule="orthogonal_residual",
                  orthogonal_schedule="late", orthogonal_lambda=lam, total_epochs=10, **STAB_OFF)
    q = [lam * (0.1 / 0.7) * x for x in _orth(G1)]
    qn, lim = math.sqrt(_dot(q, q)), 0.5 * math.sqrt(_dot(G1, G1))
    assert 0 < qn < lim
    expect = torch.tensor([w - lr * (x + y) for w, x, y in zip(P0, G1, q)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-14, rtol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_orthogonal_term_is_skipped_for_a_tiny_gradient(foreach):
    """Seed: ||g||^2 <= eps (1e-8) -> no orthogonal term, the step is plain g."""
    tiny = [x * 3e-5 for x in G1]  # ||g||^2 = 7.4e-9 <= 1e-8
    assert _dot(tiny, tiny) <= 1e-8
    lr, lam = 0.1, 1.0
    p, _ = _steps([tiny], P0, foreach=foreach, lr=lr, plasticity_scale=2.0, update_rule="orthogonal_residual",
                  orthogonal_lambda=lam, **STAB_OFF)
    expect = torch.tensor([w - lr * x for w, x in zip(P0, tiny)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-16, rtol=0)
    # without the skip the term would be a visible part of the step
    q = [lam * x for x in _orth(tiny)]
    assert math.sqrt(_dot(q, q)) > 0.05 * math.sqrt(_dot(tiny, tiny))


@pytest.mark.parametrize("foreach", [False, True])
def test_match_grad_norm_leaves_a_tiny_orthogonal_term_unscaled(foreach):
    """Seed: q is rescaled to ||g|| only if ||q|| > eps."""
    g = [0.5, -0.5, 0.5, -0.5 + 2e-8]
    q = _orth(g)
    assert 0 < math.sqrt(_dot(q, q)) <= 1e-8 and _dot(g, g) > 1e-8
    lr, lam = 0.1, 0.1
    p, _ = _steps([g], P0[:4], foreach=foreach, lr=lr, plasticity_scale=2.0, update_rule="orthogonal_residual",
                  orthogonal_lambda=lam, match_grad_norm=True, **STAB_OFF)
    expect = torch.tensor([w - lr * (x + lam * y) for w, x, y in zip(P0, g, q)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-16, rtol=0)
    # rescaled, the term would be lambda ||g|| = 0.1: far from the step taken
    assert float((p - torch.tensor([w - lr * x for w, x in zip(P0, g)], dtype=torch.float64)).norm()) < 1e-9


@pytest.mark.parametrize("scope", ["all_groups", "per_group"])
@pytest.mark.parametrize("foreach", [False, True])
def test_lr_controller_pools_groups_or_averages_per_group(foreach, scope):
    """per_group is the seed's controller (a mean within each param group); all_groups pools every group."""
    gs = [G1, [x * x - 0.3 for x in G1], [0.2, -0.1, 0.05, 1.5, -2.0]]
    lr, k = 0.1, 0.4
    ps, _ = _step_many(gs, foreach, groups=[[0], [1, 2]], lr=lr, plasticity_scale=2.0, lr_controller_mode="global",
                       lr_controller_strength=k, sensor_scope=scope, **STAB_OFF)
    sig = [_sigma(g) for g in gs]
    if scope == "all_groups":
        mult = [_clip(1 + k * sum(sig) / 3, 0.8, 1.2)] * 3
    else:
        mult = [_clip(1 + k * sig[0], 0.8, 1.2)] + [_clip(1 + k * (sig[1] + sig[2]) / 2, 0.8, 1.2)] * 2
    assert len({round(m, 12) for m in mult}) == (1 if scope == "all_groups" else 2)
    for p, g, m in zip(ps, gs, mult):
        _, alpha = _first_alphas(g)
        expect = torch.tensor([0.5 - lr * m * a * x for a, x in zip(alpha, g)], dtype=torch.float64)
        torch.testing.assert_close(p, expect, atol=1e-14, rtol=0)


@pytest.mark.parametrize("progress,seed,thirds", [
    # (epoch, total): seed boundaries p <= 0.3 | 0.3 < p < 0.7 | p >= 0.7; thirds p < 1/3 | [1/3, 2/3) | >= 2/3
    ((3, 10), "early", "early"), ((8, 25), "middle", "early"), ((1, 3), "middle", "middle"),
    ((17, 25), "middle", "late"), ((7, 10), "late", "late"),
])
def test_phase_boundaries_seed_and_thirds(progress, seed, thirds):
    p = torch.zeros(2, requires_grad=True)
    for bounds, expect in (("seed", seed), ("thirds", thirds)):
        opt = NeuroPlastic([p], update_rule="hybrid", total_epochs=progress[1], phase_boundaries=bounds)
        opt.set_epoch(progress[0])
        for scope in ("early", "middle", "late"):
            opt.param_groups[0]["phase_scope"] = scope
            assert NeuroPlastic._phase_gate(opt.param_groups[0]) == float(scope == expect), (bounds, scope)


@pytest.mark.parametrize("clip_eps", [1e-12, 1e-8])
@pytest.mark.parametrize("foreach", [False, True])
def test_bounded_residual_clip_uses_clip_eps(foreach, clip_eps):
    """The seed divides by ||r|| + 1e-12 in the bounded residual's clip; 1e-8 (= eps) is the old reading."""
    small = [x * 1e-6 for x in G1]
    lr = 0.1
    p, _ = _steps([small], P0, foreach=foreach, lr=lr, plasticity_scale=2.0, update_rule="bounded_residual",
                  residual_max_ratio=0.2, clip_eps=clip_eps, **STAB_OFF)
    _, alpha = _first_alphas(small)
    r = [(a - 1) * x for a, x in zip(alpha, small)]
    rn, lim = math.sqrt(_dot(r, r)), 0.2 * math.sqrt(_dot(small, small))
    assert rn > lim
    r = [x * lim / (rn + clip_eps) for x in r]
    expect = torch.tensor([w - lr * (x + y) for w, x, y in zip(P0, small, r)], dtype=torch.float64)
    torch.testing.assert_close(p, expect, atol=1e-20, rtol=1e-14)
    other = 1e-8 if clip_eps == 1e-12 else 1e-12
    assert abs(lim / (rn + other) - lim / (rn + clip_eps)) > 1e-3 * lim / rn, "the example must tell them apart"


# ---------------------------------------------------------------- run state outside optirep's trainer (issue #13)
def _loop(opt, p, grads, set_epoch_every=None):
    for i, g in enumerate(grads):
        if set_epoch_every and i % set_epoch_every == 0:
            opt.set_epoch(i // set_epoch_every + 1)
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().clone()


GRADS6 = [[x * (1 + 0.3 * k) - 0.05 * k for x in G1] for k in range(6)]


def test_steps_per_epoch_derives_the_epoch_like_set_epoch():
    """steps_per_epoch=2: steps 1-2 are epoch 1, 3-4 epoch 2, 5-6 epoch 3 (what optirep's train does)."""
    hp = dict(lr=0.1, warmup_epochs=2, plasticity_scale=2.0)
    a = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    oa, ob = NeuroPlastic([a], steps_per_epoch=2, **hp), NeuroPlastic([b], **hp)
    pa, pb = _loop(oa, a, GRADS6), _loop(ob, b, GRADS6, set_epoch_every=2)
    assert torch.equal(pa, pb)
    assert oa.param_groups[0]["epoch"] == 3
    c = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning):
        pc = _loop(NeuroPlastic([c], **hp), c, GRADS6)  # epoch stuck at 1: the gradient-only ablation
    assert (pc - pa).abs().max() > 1e-4


def test_epoch_gated_mechanism_without_an_epoch_source_warns_once():
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = NeuroPlastic([p], lr=0.1, warmup_epochs=2)
    with pytest.warns(RuntimeWarning, match=r"NeuroPlastic: warmup_epochs=2 .* gates on the epoch, but neither "
                                            r"set_epoch\(\) nor steps_per_epoch= is used") as rec:
        _loop(opt, p, GRADS6)
    assert len([w for w in rec if "gates on the epoch" in str(w.message)]) == 1
    import warnings
    for kw, every in (({"steps_per_epoch": 3}, None), ({}, 2), ({"warmup_epochs": 0}, None)):
        q = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _loop(NeuroPlastic([q], **{"lr": 0.1, "warmup_epochs": 2, **kw}), q, GRADS6, set_epoch_every=every)


def test_add_param_group_inherits_epoch_and_total_epochs():
    """A group added after set_total_epochs(10); set_epoch(3) (e.g. an unfrozen head) is in epoch 3 of 10."""
    p, head = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optim.build("neuroplastic", [p], lr=0.1, warmup_epochs=2, plasticity_scale=2.0)
    opt.set_total_epochs(10)
    opt.set_epoch(3)
    opt.add_param_group({"params": [head]})
    g = opt.param_groups[1]
    assert (g["epoch"], g["total_epochs"]) == (3, 10)
    assert NeuroPlastic._mix_weight(g) == 2.0  # warm-up done: full plasticity_scale, not the epoch-1 gate 0
    other = torch.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [other], "epoch": 1})  # an explicit value wins
    assert opt.param_groups[2]["epoch"] == 1


def test_resume_keeps_the_diagnostic_step_counter_and_sums():
    """The diag_every phase and the running means survive state_dict(): a resumed optimizer reads the same."""
    grads = GRADS6 * 2

    def fresh():
        p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
        return p, NeuroPlastic([p], lr=0.1, diag_every=4)

    p, ref = fresh()
    _loop(ref, p, grads)
    q, part = fresh()
    _loop(part, q, grads[:7])
    r, resumed = fresh()
    r.data.copy_(q.detach())
    resumed.load_state_dict(part.state_dict())
    _loop(resumed, r, grads[7:])
    assert torch.equal(p.detach(), r.detach())
    assert resumed.diagnostics() == ref.diagnostics() != {}


# ---------------------------------------------------------------- layer order under param-group layouts
# Every NeuroPlastic variant that reads the layer labels (issue 13, item 1).
LAYER_VARIANTS = [
    pytest.param({"lr_controller_mode": "layerwise", "lr_controller_strength": 0.5}, id="ctl-layerwise"),
    pytest.param({"lr_controller_mode": "classifier_only", "lr_controller_strength": 0.5}, id="ctl-classifier"),
    pytest.param({"update_rule": "hybrid", "layer_scope": "early_blocks"}, id="hybrid-adamw-early"),
    pytest.param({"update_rule": "hybrid", "layer_scope": "late_blocks"}, id="hybrid-adamw-late"),
    pytest.param({"update_rule": "hybrid", "hybrid_base": "sgd_momentum", "layer_scope": "classifier"},
                 id="hybrid-sgd-classifier"),
]


def _layout_model(hp, foreach, layout, order=False):
    """A four-layer MLP and NeuroPlastic over it: one group in model order, or the no-decay layout (matrices,
    then biases with weight_decay=0; both groups' hyperparameters equal)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    if layout == "one":
        params = model.parameters()
    else:
        params = [{"params": [p for p in model.parameters() if p.ndim > 1]},
                  {"params": [p for p in model.parameters() if p.ndim == 1], "weight_decay": 0.0}]
    opt = NeuroPlastic(params, **{"lr": 0.05, "plasticity_scale": 2.0, "foreach": foreach, **hp},
                       param_order=model.parameters() if order else None)
    return model, opt


def _train(model, opt, steps):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _layout_run(hp, foreach, layout, order=False, steps=5):
    model, opt = _layout_model(hp, foreach, layout, order)
    return _train(model, opt, steps), opt


@pytest.mark.parametrize("hp", LAYER_VARIANTS)
@pytest.mark.parametrize("foreach", [False, True])
def test_no_decay_layout_with_param_order_steps_exactly_like_one_group(foreach, hp):
    one, _ = _layout_run(hp, foreach, "one")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # param_order given: no layer-order warning
        grouped, _ = _layout_run(hp, foreach, "no_decay", order=True)
    for i, (a, b) in enumerate(zip(one, grouped)):
        assert torch.equal(a, b), f"tensor {i}"
    # without param_order the biases of group 1 become the "classifier": the layout changes the run and warns
    with pytest.warns(RuntimeWarning, match=r"labels layers by position .* Pass param_order=model\.parameters\(\)"):
        unordered, _ = _layout_run(hp, foreach, "no_decay")
    assert not all(torch.equal(a, b) for a, b in zip(one, unordered))


def test_layer_order_warning_fires_once_and_only_when_labels_are_read():
    hp = {"lr_controller_mode": "layerwise"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _layout_run(hp, True, "no_decay")
    assert [str(w.message).count("lr_controller_mode='layerwise'") for w in caught] == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _layout_run(hp, True, "one")  # one group: its order is the model's
        _layout_run({"update_rule": "hybrid"}, True, "no_decay")  # layer_scope "all" reads no labels
        _layout_run({}, True, "no_decay")
        # the global controller's steps do not read labels (only its per-layer diagnostics do): no warning
        _layout_run({"lr_controller_mode": "global", "diag_every": 1}, True, "no_decay")


def test_param_order_accepts_named_parameters_and_ignores_tensors_not_optimized():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    frozen = model[0].weight
    params = [model[1].bias, model[1].weight, model[0].bias]  # reversed; frozen left out
    opt = NeuroPlastic(params, param_order=model.named_parameters())
    assert opt.state_dict()["run_state"]["param_order"] == [2, 1, 0]
    ids = [id(p) for p in opt._layer_order()]
    assert id(frozen) not in ids and ids == [id(model[0].bias), id(model[1].weight), id(model[1].bias)]
    extra = torch.zeros(2, requires_grad=True)  # added later: after the ordered tensors
    opt.add_param_group({"params": [extra]})
    assert opt._layer_order()[-1] is extra
    opt.set_param_order([extra, *model.parameters()])
    assert opt._layer_order()[0] is extra


def test_param_order_missing_an_optimized_tensor_raises_naming_it():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"^NeuroPlastic: param_order lacks 1 of the optimizer's parameters, the "
                                         r"first parameter 0 of param group 1 \(shape \(2, 4\)\)"):
        NeuroPlastic([{"params": [a]}, {"params": [b]}], param_order=[a])


@pytest.mark.parametrize("foreach", [False, True])
def test_param_order_survives_state_dict_deepcopy_and_pickle(foreach):
    """Saved as flat indices: a resume into an optimizer built without param_order, a deepcopy and a
    torch.save/load copy all continue exactly like the uninterrupted run."""
    hp = {"lr_controller_mode": "classifier_only", "lr_controller_strength": 0.5}
    ref, _ = _layout_run(hp, foreach, "no_decay", order=True, steps=6)
    model, opt = _layout_model(hp, foreach, "no_decay", order=True)
    _train(model, opt, 3)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["run_state"]["param_order"] == [0, 4, 1, 5, 2, 6, 3, 7]  # indices, never tensors
    buf = io.BytesIO()
    torch.save((model, opt), buf)
    buf.seek(0)
    copies = [copy.deepcopy((model, opt)), torch.load(buf, weights_only=False)]
    resumed_model, resumed = _layout_model(hp, foreach, "no_decay", order=False)
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(sd)
    for m, o in [*copies, (resumed_model, resumed)]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the order came along: no layer-order warning
            after = _train(m, o, 3)
        for i, (a, b) in enumerate(zip(ref, after)):
            assert torch.equal(a, b), f"tensor {i}"


def test_loading_a_malformed_param_order_raises_before_loading():
    p = torch.zeros(3, requires_grad=True)
    opt = NeuroPlastic([p, torch.zeros(2, requires_grad=True)])
    sd = opt.state_dict()
    sd["run_state"]["param_order"] = [0, 0]
    with pytest.raises(ValueError, match=r"run_state\['param_order'\] must be a list holding a permutation"):
        opt.load_state_dict(sd)
    assert "param_order" not in opt._run
