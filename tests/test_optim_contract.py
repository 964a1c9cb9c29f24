"""Generic torch.optim contract tests, one parametrisation per row of tests/recipes.py."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from optirep import optim
from recipes import BY_NAME, RECIPES, Finding

NAMES = [r.name for r in RECIPES]
BIO = [n for n in NAMES if not optim.spec(n).cls.__module__.startswith("torch.")]
PATHS = [pytest.param(False, id="reference"), pytest.param(True, id="foreach")]


def test_every_registered_optimizer_has_a_recipe():
    assert sorted(BY_NAME) == optim.available()


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'nope'; known optimizers: .*adamw"):
        optim.build("nope", [torch.zeros(1, requires_grad=True)])


def _mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _batch(dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g, dtype=dtype)
    w = torch.randn(8, 3, generator=g, dtype=dtype)
    return x, (x @ w).argmax(1)


def _run(model, opt, steps, closure_mode, data):
    x, y = data
    losses = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        if closure_mode:
            loss = opt.step(closure)
        else:
            loss = closure()
            opt.step()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_on_tiny_classifier(name):
    r = BY_NAME[name]
    model = _mlp()
    opt = optim.build(name, model.parameters(), **r.hp)
    losses = _run(model, opt, 150, r.closure, _batch())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def _toy(name, fn, start, steps):
    r = BY_NAME[name]
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = optim.build(name, [p], **r.toy_hp)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            v = fn(p)
            v.backward()
            return v
        if r.closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
    return p.detach()


def _quadratic(p):
    scales = torch.tensor([1.0, 4.0], dtype=p.dtype)
    return 0.5 * ((p - 1.0) ** 2 * scales).sum()


def _rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("name", NAMES)
def test_toy_problem_progress(name, problem):
    r = BY_NAME[name]
    fn, start = (_quadratic, [-1.0, 2.0]) if problem == "quadratic" else (_rosenbrock, [-1.0, 1.5])
    target = torch.ones(2, dtype=torch.float64)
    d0 = float((torch.tensor(start, dtype=torch.float64) - target).norm())
    final = _toy(name, fn, start, r.toy_steps)
    d1 = float((final - target).norm())
    expect = getattr(r, problem)
    if isinstance(expect, Finding):
        assert expect.check(d1, d0), f"{name} on {problem}: finding no longer holds ({expect.reason}); d {d0:.3g} -> {d1:.3g}"
    else:
        assert math.isfinite(d1) and d1 < 0.5 * d0, f"{name} on {problem}: distance to minimum {d0:.3g} -> {d1:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_mechanisms_off_equals_baseline(name):
    entry = optim.spec(name)
    r = BY_NAME[name]
    hp = {k: v for k, v in r.hp.items() if k != "foreach"}
    data = _batch(torch.float64)
    m1, m2 = _mlp(torch.float64), _mlp(torch.float64)
    o1 = optim.build(name, m1.parameters(), **hp, **entry.mechanisms_off)
    o2 = optim.build_baseline(name, m2.parameters(), **hp)
    assert type(o2) is entry.baseline_cls
    _run(m1, o1, 50, r.closure, data)
    _run(m2, o2, 50, False, data)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name):
    r = BY_NAME[name]
    data = _batch()
    ref = _mlp()
    o_ref = optim.build(name, ref.parameters(), **r.hp)
    _run(ref, o_ref, 20, r.closure, data)

    a = _mlp()
    o_a = optim.build(name, a.parameters(), **r.hp)
    _run(a, o_a, 10, r.closure, data)
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(o_a.state_dict())
    torch.manual_seed(12345)  # a resumed run may have reseeded the global RNG
    b = _mlp(seed=99)
    b.load_state_dict(saved_model)
    o_b = optim.build(name, b.parameters(), **r.hp)
    o_b.load_state_dict(saved_opt)
    _run(b, o_b, 10, r.closure, data)
    for p, q in zip(ref.parameters(), b.parameters()):
        assert torch.equal(p, q), f"{name}: resumed run differs from the uninterrupted one"


@pytest.mark.parametrize("name", NAMES)
def test_closure_is_called_and_loss_returned(name):
    r = BY_NAME[name]
    model = _mlp()
    opt = optim.build(name, model.parameters(), **r.hp)
    x, y = _batch()
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls and all(calls), "closure must run under enable_grad"
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


@pytest.mark.parametrize("name", NAMES)
def test_invalid_hyperparameters_raise_exact_message(name):
    r = BY_NAME[name]
    assert r.invalid, f"{name}: recipe lists no invalid hyperparameters"
    for kwargs, message in r.invalid:
        with pytest.raises(ValueError) as info:
            optim.build(name, [torch.zeros(2, requires_grad=True)], **kwargs)
        assert str(info.value).startswith(message), f"{name} {kwargs}: got {info.value!s}"


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradient_raises(name):
    entry = optim.spec(name)
    if entry.cls.__module__.startswith("torch."):
        pytest.skip("torch's own optimizer: its sparse behaviour is torch's")
    emb = nn.Embedding(10, 4, sparse=True)
    opt = optim.build(name, emb.parameters(), **BY_NAME[name].hp)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=f"{entry.cls.__name__} does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_params_without_grad_are_skipped(name):
    r = BY_NAME[name]
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    b0 = b.detach().clone()
    opt = optim.build(name, [a, b], **r.hp)
    for _ in range(3):
        opt.zero_grad()
        (a ** 2).sum().backward()
        if r.closure:
            opt.step(lambda: (a ** 2).sum())
        else:
            opt.step()
    assert b.grad is None and torch.equal(b.detach(), b0)


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_and_param_groups(name):
    r = BY_NAME[name]
    model = _mlp()
    hp = dict(r.hp)
    lr = hp.pop("lr", optim.resolve_hp(name)["lr"])
    groups = [{"params": model[0].parameters(), "lr": lr}, {"params": model[2].parameters(), "lr": lr / 2}]
    opt = optim.build(name, groups, lr=lr, **hp)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _run(model, opt, 1, r.closure, _batch())
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 0.5)
    assert opt.param_groups[1]["lr"] == pytest.approx(lr / 4)
    _run(model, opt, 2, r.closure, _batch())
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_params(name):
    r = BY_NAME[name]
    model = _mlp(torch.bfloat16)
    opt = optim.build(name, model.parameters(), **r.hp)
    x, y = _batch(torch.bfloat16)
    losses = _run(model, opt, 5, r.closure, (x, y))
    assert all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.mark.parametrize("name", [r.name for r in RECIPES if r.fast_path])
def test_fast_path_matches_reference_loop(name):
    r = BY_NAME[name]
    data = _batch(torch.float64)
    ma, mb = _mlp(torch.float64), _mlp(torch.float64)
    hp = {k: v for k, v in r.hp.items() if k != "foreach"}
    oa = optim.build(name, ma.parameters(), **hp, foreach=False)
    ob = optim.build(name, mb.parameters(), **hp, foreach=True)
    _run(ma, oa, 30, r.closure, data)
    _run(mb, ob, 30, r.closure, data)
    for p, q in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-10)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for key, va in sa[k].items():
            vb = sb[k][key]
            if isinstance(va, torch.Tensor):
                torch.testing.assert_close(va.to(vb.dtype), vb, atol=1e-12, rtol=1e-10, msg=f"state {key}")
            else:
                assert va == vb, f"state {key}: {va} != {vb}"


@pytest.mark.parametrize("name", [n for n in NAMES if not optim.spec(n).cls.__module__.startswith("torch.")])
def test_diagnostics_are_floats_without_per_step_sync(name):
    r = BY_NAME[name]
    model = _mlp()
    opt = optim.build(name, model.parameters(), **r.hp)
    _run(model, opt, 3, r.closure, _batch())
    diag = opt.diagnostics()
    assert isinstance(diag, dict) and diag, f"{name}.diagnostics() returned nothing"
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in diag.items())


def _same_diagnostics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("foreach", PATHS)
@pytest.mark.parametrize("name", BIO)
def test_deepcopy_and_torch_save_round_trip_keep_every_attribute(name, foreach):
    """copy.deepcopy((model, opt)) and torch.save((model, opt)) / torch.load continue exactly like the original."""
    r = BY_NAME[name]
    data = _batch()
    model = _mlp()
    opt = optim.build(name, model.parameters(), **{**r.hp, "foreach": foreach})
    torch.optim.lr_scheduler.StepLR(opt, step_size=1000)  # patches opt.step with a wrapper bound to opt
    _run(model, opt, 4, r.closure, data)
    copied = copy.deepcopy((model, opt))
    buf = io.BytesIO()
    torch.save((model, opt), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m, o in ((model, opt), copied, loaded):
        _run(m, o, 4, r.closure, data)
    ref = opt.diagnostics()
    assert ref
    for m, o in (copied, loaded):
        assert o is not opt and all(p is not q for p, q in zip(m.parameters(), model.parameters()))
        for p, q in zip(m.parameters(), model.parameters()):
            assert torch.equal(p, q), f"{name}: the copy's steps differ from the original's"
        assert _same_diagnostics(o.diagnostics(), ref)


@pytest.mark.parametrize("foreach", PATHS)
@pytest.mark.parametrize("name", BIO)
def test_zero_element_params_are_skipped_and_change_nothing(name, foreach):
    """A Parameter(torch.empty(0, 16)) in the group: every other value (weights, state, diagnostics) is exact."""
    r = BY_NAME[name]

    def run(with_empty):
        model = _mlp(torch.float64)
        params = list(model.parameters())
        empty = nn.Parameter(torch.empty(0, 16, dtype=torch.float64))
        if with_empty:
            params = params[:2] + [empty] + params[2:]
        opt = optim.build(name, params, **{**r.hp, "foreach": foreach})
        x, y = _batch(torch.float64)
        for _ in range(5):
            def closure():
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                empty.grad = torch.zeros_like(empty)
                return loss
            if r.closure:
                opt.step(closure)
            else:
                closure()
                opt.step()
        return model, opt, empty

    m0, o0, _ = run(False)
    m1, o1, empty = run(True)
    assert not o1.state.get(empty), "a zero-element parameter gets no state"
    for p0, p1 in zip(m0.parameters(), m1.parameters()):
        assert torch.equal(p0, p1)
        s0, s1 = o0.state[p0], o1.state[p1]
        assert s0.keys() == s1.keys()
        for k in s0:
            assert torch.equal(torch.as_tensor(s0[k]), torch.as_tensor(s1[k])), k
    assert _same_diagnostics(o0.diagnostics(), o1.diagnostics())


@pytest.mark.parametrize("name", BIO)
def test_complex_params_are_refused_naming_optimizer_and_dtype(name):
    cls = optim.spec(name).cls.__name__
    z = nn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=rf"^{cls} does not support complex parameters: parameter 1 of param group 0 "
                                        r"has dtype torch.complex64"):
        optim.build(name, [nn.Parameter(torch.zeros(2)), z], **BY_NAME[name].hp)
    opt = optim.build(name, [nn.Parameter(torch.zeros(2))], **BY_NAME[name].hp)
    with pytest.raises(TypeError, match=rf"^{cls} does not support complex parameters: parameter 0 of param group 1"):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("foreach", PATHS)
@pytest.mark.parametrize("name", BIO)
def test_param_group_layout_does_not_change_the_algorithm(name, foreach):
    """The no-decay grouping (matrices, then biases in a second group), both with the same hyperparameters,
    steps exactly like one group holding the same tensors in the same order."""
    r = BY_NAME[name]

    def run(grouped):
        model = _mlp(torch.float64)
        mats = [p for p in model.parameters() if p.ndim > 1]
        vecs = [p for p in model.parameters() if p.ndim == 1]
        params = [{"params": mats}, {"params": vecs}] if grouped else mats + vecs
        opt = optim.build(name, params, **{**r.hp, "foreach": foreach})
        _run(model, opt, 10, r.closure, _batch(torch.float64))
        return model

    for p, q in zip(run(False).parameters(), run(True).parameters()):
        torch.testing.assert_close(p, q, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("name", BIO)
def test_compiled_step_stops_recompiling_and_matches_eager(name):
    """torch.compile(opt.step), PyTorch's recipe for compiling an optimizer: the number of compiled graphs stops
    growing after the first steps (no guard on a per-step counter or value) and the results equal eager steps.

    The guards are dynamo's whatever the backend, so the "eager" backend (dynamo's tracing and guards, no code
    generation) keeps this short; the recompile limit is raised so that a per-step recompile could not hide
    behind it.
    """
    import inspect

    import torch._dynamo
    from torch._dynamo.utils import counters

    r = BY_NAME[name]
    cls = optim.spec(name).cls
    hp = {**r.hp, **({"diag_every": 2} if "diag_every" in inspect.signature(cls).parameters else {})}
    data = _batch()
    me, mc = _mlp(), _mlp()
    oe, oc = optim.build(name, me.parameters(), **hp), optim.build(name, mc.parameters(), **hp)
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    with torch._dynamo.config.patch(recompile_limit=64):
        step = torch.compile(oc.step, backend="eager")
        x, y = data
        for _ in range(12):
            for model, opt, fn in ((me, oe, oe.step), (mc, oc, step)):
                def closure():
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    return loss
                if r.closure:
                    fn(closure)
                else:
                    closure()
                    fn()
            graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] > 0, "nothing was compiled"
    assert graphs[-1] == graphs[-4], f"{name}: compiled graphs per step {graphs} still growing"
    for p, q in zip(me.parameters(), mc.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    de, dc = oe.diagnostics(), oc.diagnostics()
    assert de.keys() == dc.keys()
    for k in de:
        assert dc[k] == pytest.approx(de[k], rel=1e-4, abs=1e-6, nan_ok=True), k


@pytest.mark.parametrize("name", BIO)
def test_state_dict_without_run_state_or_newer_group_keys_still_loads(name):
    """A checkpoint written before `run_state` and newer hyperparameters existed loads with fresh run state and
    the defaults of the missing keys."""
    r = BY_NAME[name]
    model = _mlp()
    opt = optim.build(name, model.parameters(), **r.hp)
    _run(model, opt, 2, r.closure, _batch())
    sd = copy.deepcopy(opt.state_dict())  # torch's load_state_dict may share the tensors otherwise
    del sd["run_state"]
    newest = "sensor_scope" if "sensor_scope" in opt.defaults else "lr"
    if newest != "lr":
        for g in sd["param_groups"]:
            del g[newest]
    m2 = _mlp()
    m2.load_state_dict(model.state_dict())
    other = optim.build(name, m2.parameters(), **r.hp)
    other.load_state_dict(sd)
    assert all(g[newest] == opt.defaults[newest] for g in other.param_groups)
    _run(m2, other, 1, r.closure, _batch())
    _run(model, opt, 1, r.closure, _batch())
    for p, q in zip(model.parameters(), m2.parameters()):
        assert torch.equal(p, q)
