"""EnhancedSGD: each mechanism of Path A, the Q-learning controller of Path B, the seed-bug flags,
and resumable controller state."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from optirep import optim
from optirep.optim.enhanced_sgd import EnhancedSGD, histogram_entropy

OFF = dict(gradient_centering=False, gradient_clipping=False, apply_noise=False, controller=False,
           grad_retention=False, momentum=0.0, lr=1.0)


def _one_step(grads, **hp):
    ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
    opt = EnhancedSGD(ps, **{**OFF, **hp})
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    opt.step()
    return [-p.detach() for p in ps], opt  # lr 1, momentum 0: -delta p = processed gradient


def test_centering_zeroes_mean_and_one_element_grads():
    g = [torch.randn(4, 5, dtype=torch.float64) + 3.0, torch.tensor([2.5], dtype=torch.float64)]
    (u, one), _ = _one_step(g, gradient_centering=True)
    torch.testing.assert_close(u, g[0] - g[0].mean())
    assert abs(float(u.mean())) < 1e-12 and torch.equal(one, torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("std", [0.01, 2.0, 100.0])
def test_clip_bound_formula(std):
    g = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * std
    (u,), opt = _one_step([g], gradient_clipping=True)
    sigma2 = 0.1 * float(g.var())
    if abs(sigma2) > 0.9:  # the seed's "stabilisation" against sigma2_prev = 0
        sigma2 = 0.1 * sigma2
    c = min(max(2 * math.sqrt(sigma2), 0.5), 10.0)
    torch.testing.assert_close(u, g.clamp(-c, c))
    assert opt.diagnostics()["clip"] == pytest.approx(c, rel=1e-6)


def test_noise_has_the_requested_scale():
    (u,), _ = _one_step([torch.zeros(20000)], apply_noise=True, noise_scale=0.1, seed=3)
    assert abs(float(u.std()) - 0.1) < 0.003 and abs(float(u.mean())) < 0.003


def test_path_a_is_sgd_plus_centering_plus_noise():
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    m2 = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    m2.load_state_dict(m1.state_dict())
    opt = optim.build("enhanced_sgd_noclosure", m1.parameters(), lr=0.1, seed=7, gradient_clipping=False)
    gen = torch.Generator().manual_seed(7)
    bufs = [torch.zeros_like(p) for p in m2.parameters()]
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,))
    for _ in range(5):
        for m in (m1, m2):
            m.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
        opt.step(lambda: torch.tensor(1.0))  # Path A even with a closure
        with torch.no_grad():
            for p, b in zip(m2.parameters(), bufs):
                g = p.grad - p.grad.mean() + 1e-4 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                b.mul_(0.9).add_(g)
                p.add_(b, alpha=-0.1)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
    assert opt.state["controller"]["q_table"] == {}


def test_histogram_entropy_matches_numpy_on_both_branches():
    x = torch.randn(5000, dtype=torch.float64) * 0.01
    h, _ = np.histogram(x.numpy(), bins=100, density=True)
    h = h + 1e-12
    ref = float(-(h * np.log(h)).sum())
    for sync_free in (False, True):
        assert float(histogram_entropy(x, sync_free=sync_free)) == pytest.approx(ref, rel=1e-9)


def _quadratic_run(opt, p, losses, epoch=None):
    for i, lv in enumerate(losses):
        def closure(lv=lv):
            opt.zero_grad()
            ((p - 1) ** 2).sum().backward()
            return torch.tensor(lv)
        opt.step(closure, current_epoch=epoch)


def _ctl_opt(**hp):
    p = torch.randn(10, requires_grad=True)
    return EnhancedSGD([p], seed=0, **hp), p


def test_q_table_learns_from_reward_and_epsilon_decays_to_floor():
    opt, p = _ctl_opt(q_epsilon_decay=0.5)
    _quadratic_run(opt, p, [1.0 + 0.1 * i for i in range(12)])
    ctl = opt.state["controller"]
    values = [v for row in ctl["q_table"].values() for v in row.values()]
    assert len(ctl["q_table"]) == 12 and any(v < 0 for v in values)  # reward = -(|dsigma2| + 0.1 |dH|) < 0
    assert ctl["epsilon"] == 0.01
    d = opt.diagnostics()
    assert d["reward"] < 0 and d["epsilon"] == pytest.approx(0.01)


@pytest.mark.parametrize("fix", [False, True])
def test_loss_spike(fix):
    opt, p = _ctl_opt(q_epsilon=0.0, fix_spike_correction=fix, lr=0.01)
    _quadratic_run(opt, p, [1.0, 1.01, 1.02, 1.03])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01) and opt.param_groups[0]["momentum"] == pytest.approx(0.9)
    _quadratic_run(opt, p, [10.0])  # > 1.5 x mean of the last losses
    # The seed halves lr_eff and overwrites it in the same step: only the momentum is damped
    # (0.9 * 0.9 = 0.81, clamped back to the window floor 0.85).
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005 if fix else 0.01)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.85)


@pytest.mark.parametrize("epoch, fix, expect", [(1, False, 0.9), (3, False, 0.99 * 0.85), (10, False, 0.495),
                                                (10, True, 0.9)])
def test_momentum_window_collapse(epoch, fix, expect):
    opt, p = _ctl_opt(q_epsilon=0.0, fix_momentum_window=fix)
    _quadratic_run(opt, p, [1.0], epoch=epoch)
    assert opt.param_groups[0]["momentum"] == pytest.approx(expect)
    assert opt.state["controller"]["epoch"] == epoch


@pytest.mark.parametrize("fix", [False, True])
def test_lr_compounding(fix):
    opt, p = _ctl_opt(q_epsilon=0.0, fix_lr_compounding=fix, lr=0.01)
    opt.state["controller"]["scales"]["lr_scale"] = 1.2  # greedy no-op actions keep it there
    _quadratic_run(opt, p, [1.0, 1.1, 1.2])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 if fix else 0.01 * 1.2 ** 3)
    assert opt.diagnostics()["lr"] == pytest.approx(0.012 if fix else 0.01 * 1.2 ** 3, rel=1e-6)


def test_faithful_lr_compounding_diverges_on_tiny_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(64, 8)
    y = (x @ torch.randn(8, 3)).argmax(1)
    opt = optim.build("enhanced_sgd", model.parameters(), lr=0.05, seed=0)
    for _ in range(150):
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)
    lr = opt.param_groups[0]["lr"]
    assert lr > 10 * 0.05 or lr < 0.05 / 10, f"lr {lr}: the compounding random walk no longer moves far"


@pytest.mark.parametrize("fix, kind", [(False, "add"), (True, "mult")])
def test_action_typing(fix, kind):
    opt, _ = _ctl_opt(q_epsilon=0.0, fix_action_typing=fix)
    s = (1.0, 0.0, -1.0, 1, 1)
    opt.state["controller"]["q_table"][s] = {**opt._new_q_row(), "lr_scale_mult": -0.0003,
                                                    "lr_scale_add": -0.001}
    (name, value, got), *_ = opt._choose(s)
    # 1 + Q = 0.9997 is outside {0.95, 1, 1.05}: the seed ADDS it to lr_scale.
    assert (name, value, got) == ("lr_scale", 0.9997, kind)


@pytest.mark.parametrize("fix", [False, True])
def test_next_state(fix):
    opt, p = _ctl_opt(fix_next_state=fix)
    _quadratic_run(opt, p, [1.0])
    ctl = opt.state["controller"]
    updated = [v for row in ctl["q_table"].values() for v in row.values() if v != 0]
    assert bool(updated) != fix and (ctl["pending"] is not None) == fix
    _quadratic_run(opt, p, [2.0])
    assert any(v != 0 for row in ctl["q_table"].values() for v in row.values())


def test_weight_decay_flag_and_baseline_mapping():
    e = optim.spec("enhanced_sgd")
    assert e.to_baseline(optim.resolve_hp("enhanced_sgd", **e.mechanisms_off))["weight_decay"] == 0.0
    hp = {"apply_weight_decay": True, "weight_decay": 0.05, "lr": 0.1}
    torch.manual_seed(0)
    a, b = torch.randn(6, dtype=torch.float64, requires_grad=True), None
    b = a.detach().clone().requires_grad_(True)
    o1 = optim.build("enhanced_sgd", [a], **hp, **e.mechanisms_off)
    o2 = optim.build_baseline("enhanced_sgd", [b], **hp)
    assert o2.defaults["weight_decay"] == 0.05
    for _ in range(5):
        for p, o in ((a, o1), (b, o2)):
            o.zero_grad()
            (p ** 3).sum().backward()
            o.step()
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _mlp_run(opt, model, steps, data):
    x, y = data
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)


def test_resume_through_torch_save_is_bit_identical_with_controller():
    hp = dict(lr=0.05, seed=1, fix_lr_compounding=True, fix_next_state=True, q_epsilon=0.9)
    data = (torch.randn(32, 8), torch.randint(0, 3, (32,)))

    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    ref = mlp()
    o_ref = EnhancedSGD(ref.parameters(), **hp)
    _mlp_run(o_ref, ref, 16, data)
    a = mlp()
    o_a = EnhancedSGD(a.parameters(), **hp)
    _mlp_run(o_a, a, 8, data)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": o_a.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    torch.manual_seed(999)
    b = mlp()
    b.load_state_dict(ck["model"])
    o_b = EnhancedSGD(b.parameters(), **{**hp, "seed": 5})
    o_b.load_state_dict(ck["opt"])
    assert o_b.state["controller"]["q_table"] == o_a.state["controller"]["q_table"]
    assert all(isinstance(k, tuple) for k in o_b.state["controller"]["q_table"])
    _mlp_run(o_b, b, 8, data)
    for p, q in zip(ref.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert o_b.state["controller"]["q_table"] == o_ref.state["controller"]["q_table"]


def test_fast_path_matches_loop_with_binding_clip_and_controller():
    torch.manual_seed(0)
    ps = [torch.randn(30, dtype=torch.float64, requires_grad=True), torch.randn(1, dtype=torch.float64, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    oa = EnhancedSGD(ps, foreach=False, seed=2, lr=0.01)
    ob = EnhancedSGD(qs, foreach=True, seed=2, lr=0.01)
    for step in range(10):
        for params, o in ((ps, oa), (qs, ob)):
            def closure(params=params, o=o):
                o.zero_grad()
                loss = sum(((p * 3) ** 3).sum() for p in params)  # gradients >> clip bound
                loss.backward()
                return loss
            o.step(closure)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-10)
    clip = oa.diagnostics()["clip"]
    assert 0.5 <= clip <= 10.0 and float(ps[0].grad.abs().max()) > clip


def test_sparse_message_and_diagnostic_keys():
    opt, p = _ctl_opt()
    _quadratic_run(opt, p, [1.0])
    keys = set(opt.diagnostics())
    assert {"lr", "momentum", "sigma2", "entropy", "clip", "epsilon", "lr_scale", "reward", "explore",
            "action_lr_scale"} <= keys
    emb = nn.Embedding(4, 2, sparse=True)
    o = EnhancedSGD(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="EnhancedSGD does not support sparse gradients"):
        o.step()


def test_histogram_entropy_of_a_list_is_that_of_the_concatenation():
    parts = [torch.randn(n, dtype=torch.float64) * s for n, s in ((300, 0.01), (7, 1.0), (1000, 0.001))]
    whole = torch.cat(parts)
    for sync_free in (False, True):
        assert float(histogram_entropy(parts, sync_free=sync_free)) == pytest.approx(
            float(histogram_entropy(whole, sync_free=sync_free)), rel=1e-12)


# ---------------------------------------------------------------- outside optirep's trainer (issue #13)
def _quad_steps(opt, p, n, closure=True, set_epoch_every=None):
    target = torch.arange(4, dtype=torch.float64)
    for i in range(n):
        if set_epoch_every and i % set_epoch_every == 0:
            opt.set_epoch(i // set_epoch_every + 1)

        def loss_fn():
            opt.zero_grad()
            loss = ((p - target) ** 2).sum()
            loss.backward()
            return loss
        if closure:
            opt.step(loss_fn)
        else:
            loss_fn()
            opt.step()


def test_controller_without_a_closure_warns_once():
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = optim.build("enhanced_sgd", [p], seed=0)
    with pytest.warns(RuntimeWarning, match=r"EnhancedSGD: controller=True but step\(\) got no closure") as rec:
        _quad_steps(opt, p, 5, closure=False)
    assert len(rec) == 1
    ctl = opt.state["controller"]
    assert ctl["q_table"] == {} and ctl["epsilon"] == 0.5  # Path A: the controller never ran
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        _quad_steps(optim.build("enhanced_sgd_noclosure", [q], seed=0), q, 3, closure=False)


def test_steps_per_epoch_moves_the_controllers_epoch_like_set_epoch():
    a = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    oa = optim.build("enhanced_sgd", [a], seed=0, steps_per_epoch=3)
    ob = optim.build("enhanced_sgd", [b], seed=0)
    _quad_steps(oa, a, 7)
    _quad_steps(ob, b, 7, set_epoch_every=3)
    assert oa.state["controller"]["epoch"] == ob.state["controller"]["epoch"] == 3
    assert torch.equal(a, b) and oa.state["controller"]["q_table"] == ob.state["controller"]["q_table"]
    c = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    oc = optim.build("enhanced_sgd", [c], seed=0)
    with pytest.warns(RuntimeWarning, match=r"EnhancedSGD: the controller reads the epoch") as rec:
        _quad_steps(oc, c, 4)
    assert len(rec) == 1 and oc.state["controller"]["epoch"] == 1


# ---------------------------------------------------------------- compiled path (issue #12)
# Tensors of >= optim._flat.SMALL_NUMEL elements get their own compiled kernels, the smaller ones are gathered.
_SHAPES = [(40, 500), (64,), (3, 3), (1,), (17, 1000), (7,)]


def _compiled_pair(monkeypatch, **hp):
    """(reference loop, default path) on equal float64 parameters in two groups; the default path compiles."""
    from optirep.optim import _base

    monkeypatch.setattr(_base, "AUTO_COMPILE_MIN_NUMEL", 0)  # a small test model takes the compiled path
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, dtype=torch.float64, generator=gen).requires_grad_(True) for s in _SHAPES]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]

    def groups(params):
        return [{"params": params[:3]}, {"params": params[3:], "lr": 0.02}]

    return ps, qs, EnhancedSGD(groups(ps), foreach=False, seed=2, lr=0.01, **hp), \
        EnhancedSGD(groups(qs), seed=2, lr=0.01, **hp)


def _cubic_step(o, params, closure=True, scale=3.0):
    def loss_fn():
        o.zero_grad()
        loss = sum(((p * scale) ** 3).sum() for p in params)  # gradients >> the clip bound
        loss.backward()
        return loss
    if closure:
        o.step(loss_fn)
    else:
        loss_fn()
        o.step()


@pytest.mark.parametrize("hp", [{}, {"controller": False, "apply_weight_decay": True, "use_grad_scale": True},
                                {"gradient_centering": False, "apply_noise": False, "fix_action_typing": True}])
def test_compiled_path_matches_reference_loop_in_float64(hp, monkeypatch):
    from optirep.optim.paths import code_path

    ps, qs, oa, ob = _compiled_pair(monkeypatch, **hp)
    assert code_path(oa) == "reference" and code_path(ob) == "compiled"
    da, db = [], []
    for _ in range(6):
        for params, o, d in ((ps, oa, da), (qs, ob, db)):
            _cubic_step(o, params)
            d.append(o.diagnostics())
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-10)
    for a, b in zip(da, db):  # statistics, histogram entropy and the controller's decisions, step by step
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith(("action_", "explore")):
                assert a[k] == b[k], k
            else:
                assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-12), k
    ca, cb = oa.state["controller"], ob.state["controller"]
    assert ca["scales"] == cb["scales"] and ca["epsilon"] == cb["epsilon"]
    assert ca["q_table"].keys() == cb["q_table"].keys()
    for s, row in ca["q_table"].items():
        assert row == pytest.approx(cb["q_table"][s], rel=1e-9, abs=1e-12)
    assert 0.5 <= da[-1]["clip"] <= 10.0 and float(qs[0].grad.abs().max()) > da[-1]["clip"]


def test_compiled_path_retains_what_the_reference_retains(monkeypatch):
    # A wide gradient range makes the entropy > 0.5 (retained) and a narrow one <= 0.5 (not retained).
    for scale, retained in ((1.0, True), (0.5, False)):
        ps, qs, oa, ob = _compiled_pair(monkeypatch, controller=False, gradient_buffer_size=20)
        for _ in range(3):
            _cubic_step(oa, ps, closure=False, scale=scale)
            _cubic_step(ob, qs, closure=False, scale=scale)
        ra, rb = oa.retained_gradients(), ob.retained_gradients()
        assert (len(ra) > 0) is retained and len(ra) == len(rb) and len(oa._retained) == len(ob._retained) == 18
        for a, b in zip(ra, rb):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_compiled_path_state_dict_round_trip_is_bit_identical(monkeypatch):
    _, qs, _, ob = _compiled_pair(monkeypatch)
    for _ in range(3):
        _cubic_step(ob, qs)
    saved_p = [q.detach().clone() for q in qs]
    sd = copy.deepcopy(ob.state_dict())
    for _ in range(3):
        _cubic_step(ob, qs)
    _, rs, _, oc = _compiled_pair(monkeypatch)
    with torch.no_grad():
        for r, s in zip(rs, saved_p):
            r.copy_(s)
    oc.load_state_dict(sd)
    for _ in range(3):
        _cubic_step(oc, rs)
    for q, r in zip(qs, rs):
        assert torch.equal(q, r)
    assert ob.state["controller"]["q_table"] == oc.state["controller"]["q_table"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_drawn_into_kept_buffers_equals_randn(dtype):
    sizes = [(1,), (15,), (16,), (17,), (40, 33), (64,)]
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    bufs = [torch.empty(s, dtype=dtype) for s in sizes]
    for _ in range(2):
        ref = [torch.randn(s, generator=g1, dtype=dtype) for s in sizes]
        for b in bufs:
            b.normal_(generator=g2)
        assert all(torch.equal(a, b) for a, b in zip(ref, bufs))


def test_compiled_path_compiles_its_kernels_once_and_under_torch_compile(monkeypatch):
    """The controller changes lr and momentum every step: they reach the kernels as tensors, so the kernels
    compile in the first step only; torch.compile(opt.step) (its host parts are outside the graph) stops
    recompiling and gives the same parameters as eager steps."""
    from torch._dynamo.utils import counters

    _, qs, _, ob = _compiled_pair(monkeypatch, q_epsilon=1.0)
    _, rs, _, oc = _compiled_pair(monkeypatch, q_epsilon=1.0)
    eager, traced = [], []
    for _ in range(8):
        _cubic_step(ob, qs)
        eager.append(counters["stats"]["unique_graphs"])
    assert eager[0] == eager[-1], f"the kernels compiled again after step 1: {eager}"
    step = torch.compile(oc.step, backend="eager")
    for _ in range(8):
        def loss_fn():
            oc.zero_grad()
            loss = sum(((p * 3.0) ** 3).sum() for p in rs)
            loss.backward()
            return loss
        step(loss_fn)
        traced.append(counters["stats"]["unique_graphs"])
    assert traced[-1] == traced[-4], f"compiled graphs per step {traced} still growing"
    for q, r in zip(qs, rs):
        torch.testing.assert_close(q, r, atol=1e-12, rtol=1e-10)


def test_compiled_path_in_float32_matches_the_reference_to_rounding(monkeypatch):
    from optirep.optim import _base

    monkeypatch.setattr(_base, "AUTO_COMPILE_MIN_NUMEL", 0)
    gen = torch.Generator().manual_seed(0)
    ps = [(torch.randn(s, generator=gen) * 0.1).requires_grad_(True) for s in _SHAPES]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    hp = dict(seed=3, lr=0.01, noise_scale=1.0)  # the noise dominates the update: another draw would show
    oa, ob = EnhancedSGD(ps, foreach=False, **hp), EnhancedSGD(qs, **hp)
    for _ in range(4):
        _cubic_step(oa, ps, closure=False, scale=1.0)
        _cubic_step(ob, qs, closure=False, scale=1.0)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)
    assert torch.equal(oa._noise_gen.get_state(), ob._noise_gen.get_state())
