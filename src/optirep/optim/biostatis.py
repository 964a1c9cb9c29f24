"""BiostatisV6: AdamW plus homeostatic gains, two gradient memories and a polarity-modulated gradient.

    from optirep import optim
    opt = optim.build("biostatis_v6", model.parameters())          # V6-H, the seed's code defaults
    opt = optim.build("biostatis_v6_global", model.parameters())   # V6-G, the GPT-1 variant
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ._base import BioOptimizer, check_betas, check_compile, check_hp, check_not_sparse, compiled, use_compiled
from ._flat import abs_tanh, alias_1d, bump_versions, partition
from .registry import Entry

_NAME = "BiostatisV6"
_HIERARCHIES = ("hierarchical", "global")
_SENSOR_SCOPES = ("all_groups", "per_group")
_STATE_KEYS = ("exp_avg", "exp_avg_sq", "memory_ema_1", "memory_ema_2")


def _sensor_terms(g, m, v, b1: float, b2: float) -> list[torch.Tensor]:
    """The six per-element terms whose per-tensor sums the gains need, from this step's moments
    m' = lerp(m, g, 1-b1), v' = b2 v + (1-b2) g^2 (computed here, not stored: `_update_terms` stores them):
    g^2, |tanh g|, m' g, m'^2, |m'|, sqrt(v'). Reads g, m, v only (3 arrays instead of 5 read and 4 written)."""
    m = torch.lerp(m, g, 1 - b1)
    v = torch.addcmul(v * b2, g, g, value=1 - b2)
    return [g * g, abs_tanh(g), m * g, m * m, m.abs(), v.sqrt()]


def _sensors_kernel(g, m, v, b1: float, b2: float):
    """`_sensor_terms` summed over the whole tensor: a [6] tensor."""
    return torch.stack([x.sum() for x in _sensor_terms(g, m, v, b1, b2)])


def _sensor_terms_kernel(g, m, v, b1: float, b2: float):
    """`_sensor_terms` as one [6, n] tensor (for gathered small tensors, summed per tensor by the caller)."""
    return torch.stack(_sensor_terms(g, m, v, b1, b2))


def _update_terms(p, g, m, v, M1, M2, c, b1: float, b2: float, d1: float, d2: float):
    """Moment and memory updates in place (m, v as in `_sensor_terms`), then
    p <- c6 p + c7 [m/(c0 sqrt(v) + c1) + c2 M1 + c3 M2 + c4 g + c5 |g|] in place; returns the Adam part and
    the extra part (before the c7 scaling) per element. `c` is [8] (one tensor) or [8, n] (per element)."""
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    M1.lerp_(g, 1 - d1)
    M2.lerp_(g, 1 - d2)
    adam = m / (v.sqrt() * c[0] + c[1])
    extra = c[2] * M1 + c[3] * M2 + c[4] * g + c[5] * g.abs()
    p.mul_(c[6]).add_((adam + extra) * c[7])
    return adam, extra


def _update_kernel(p, g, m, v, M1, M2, c, b1: float, b2: float, d1: float, d2: float):
    """`_update_terms` on one tensor; returns the two squared norms of the Adam part and of the extra part
    (before the c7 scaling) for the diagnostics."""
    adam, extra = _update_terms(p, g, m, v, M1, M2, c, b1, b2, d1, d2)
    return torch.stack([(adam * adam).sum(), (extra * extra).sum()])


def _apply_kernel(p, g, m, v, M1, M2, c, b1: float, b2: float, d1: float, d2: float) -> None:
    """`_update_terms` on one tensor without the diagnostics' norms (steps that record none): one loop. With
    the two sums inductor's CPU code stores the extra part and reads it back in a second loop (~1.8x the time)."""
    _update_terms(p, g, m, v, M1, M2, c, b1, b2, d1, d2)


def _apply_terms_kernel(p, g, m, v, M1, M2, c, b1: float, b2: float, d1: float, d2: float) -> None:
    """`_apply_kernel` with a per-element `c` ([8, n]), for gathered small tensors."""
    _update_terms(p, g, m, v, M1, M2, c, b1, b2, d1, d2)


def _update_terms_kernel(p, g, m, v, M1, M2, c, b1: float, b2: float, d1: float, d2: float):
    """`_update_terms` with a per-element `c` ([8, n]); returns [adam^2, extra^2] per element ([2, n])."""
    adam, extra = _update_terms(p, g, m, v, M1, M2, c, b1, b2, d1, d2)
    return torch.stack([adam * adam, extra * extra])


_WARMED: set = set()


@torch.compiler.disable
def _warm_diag_kernels(dtype: torch.dtype, device: torch.device) -> None:
    """Compile the update kernels with the diagnostics' norms (used every `diag_every` steps) now, on throwaway
    tensors, so that their compile lands in the first step (which timing excludes) and not in step
    `diag_every`. Once per process, dtype and device. 8192 elements: inductor's CPU sums guard on the size
    being above 4096 (its cascade summation), as every tensor the per-tensor kernels see is by default."""
    if (dtype, device) in _WARMED:
        return
    _WARMED.add((dtype, device))
    n = 8192
    z = [torch.zeros(n, dtype=dtype, device=device) for _ in range(6)]
    compiled(_update_kernel)(*z, torch.ones(8, dtype=dtype, device=device), 0.9, 0.999, 0.9, 0.99)
    z = [torch.zeros(n, dtype=dtype, device=device) for _ in range(6)]
    compiled(_update_terms_kernel)(*z, torch.ones(8, n, dtype=dtype, device=device), 0.9, 0.999, 0.9, 0.99)


class BiostatisV6(BioOptimizer):
    r"""AdamW whose step is scaled by homeostatic gains and topped up with memory and gradient terms.

    Seed:
        Hindolch/V6-optimizer. V6-H is ``optimizers/biostatis.py @ 09882d3`` (CIFAR-10/100 runs);
        V6-G is the class in ``experiments/gpt1_v6.py @ 0561329`` (Shakespeare GPT-1 run). Both are
        specified in section 1 of the project's seeds spec (research/seeds-spec.md); this class follows
        the seed *code* where its README disagrees.

    Math:
        Per step; ``g`` is one tensor's gradient, ``t`` its step (1-based), ``n`` its element count,
        ``N`` the total element count of every gradient, ``mean`` over elements.

        Sensors: energy ``E = mean(g^2)`` and coherence ``C = mean(|tanh g|)``, once over every gradient
        of every param group (``E_g, C_g``: the seed's ``g_cat``; ``sensor_scope="per_group"``: over the
        group's gradients only) and once per tensor (``E_l, C_l``).

        Gains. ``hierarchy="hierarchical"`` (V6-H), with ``k = global_strength`` (0.5),
        ``b_g = global_energy_blend`` (0.9), ``b_l = local_energy_blend`` (0.8):
            h_g = 1 - k rho tanh(C_g - c*)
            e_g = clip(1 + b_g k lam (E* - E_g), global_clamp)      # = clip(0.9 (1 + .5 lam (E*-E_g)) + 0.1)
            h_l = 1 - rho tanh(C_l - c*)
            e_l = clip(1 + b_l lam (E* - E_l), local_clamp)         # = clip(0.8 (1 + lam (E*-E_l)) + 0.2)
            h = a h_g + (1-a) h_l,  e = a e_g + (1-a) e_l           # a = global_share (0.3)
        ``hierarchy="global"`` (V6-G): the local formulas at full strength on the group sensors,
            h = 1 - rho tanh(C_g - c*),  e = clip(1 + b_l lam (E* - E_g), local_clamp).

        Per tensor:
            m <- b1 m + (1-b1) g,   v <- b2 v + (1-b2) g^2            (exp_avg, exp_avg_sq)
            M_k <- d_k M_k + (1-d_k) g  (k=1,2),  F = w1 M_1 + w2 M_2    (memory_ema_1/2)
            c = cos(vec m, vec g)                                     (one scalar per tensor)
            g~ = g (1 + 0.5 sign(g) tanh c) = g + 0.5 tanh(c) |g|     (symmetric_polarity=False)
            I = mean|m| / (mean sqrt(v) + importance_eps)             (raw moments)
            if I < tau:  g~ <- g~ + kappa (1 - exp(-ascent_ramp t)) g
            bc1 = 1 - b1^t, bc2 = 1 - b2^t,  denom = sqrt(v)/sqrt(bc2) + eps
            p <- p (1 - lr wd) - (lr/bc1) h e [ m/denom + memory_coef F + grad_coef g~ ]

        Equivalently ``p <- (1 - lr wd) p - lr h e [m_hat/(sqrt(v_hat)+eps) + (0.05 F + 0.01 g~)/bc1]``.
        With every mechanism off (homeo_rate = lambda_energy = memory_coef = grad_coef = 0) the gains
        are exactly 1 and this is ``torch.optim.AdamW`` step for step.

        State per parameter: ``exp_avg, exp_avg_sq, memory_ema_1, memory_ema_2`` (4 P, AdamW has 2 P)
        and ``step`` (Python int, as in the seed).

    Deviations from the seed:
        * Where README and code disagree (spec 1(d)) this follows the CODE; each alternative reading is
          a flag: ``symmetric_polarity`` (README's "aligns directions": ``g~ = g (1 + 0.5 tanh c)``),
          ``true_ascent`` (the "selective ascent" term is really extra descent in the code; True
          subtracts it), ``bias_correct_extras`` (code divides the F and g~ terms by bc1; False uses
          plain lr as the README formula), ``wd_scaled_by_gains`` (code decays by ``lr wd`` only;
          True uses ``lr h e wd``).
        * Every hard-coded constant is a hyperparameter with the seed's value as default
          (memory_coef, grad_coef, global_share, clamps, energy blends, global_strength, ascent_ramp,
          importance_eps, cosine_eps).
        * The seed moves the sensors and gains to the host (``.item()``, Python floats, tanh in
          float32). Here they stay on the device as tensors in the compute dtype (float64 for float64
          params, else float32); values agree to rounding. The branch ``I < tau`` is a ``torch.where``.
        * The two memories are stored as ``memory_ema_1``/``memory_ema_2`` instead of a list
          ``memory_emas``.
        * bfloat16/float16 params: the arithmetic runs in float32 and the four state tensors are kept
          in float32 (an EMA with decay 0.999 stalls in bfloat16), so the state is 8 bytes per
          bf16 param byte there; ``load_state_dict`` keeps them float32.
        * Sparse gradients raise RuntimeError (V6-H did not check; V6-G raised).
        * The global sensors pool every param group (``sensor_scope="all_groups"``); the seed's ``g_cat``
          concatenates one param group's gradients (``sensor_scope="per_group"``). Identical with one
          group, as in every seed run; pooling keeps the common no-decay grouping (biases and norms in a
          second group with weight_decay=0) from changing the algorithm.
        * Zero-element parameters are skipped (no state, no share in N).

    Warnings:
        * With ordinary gradients (|g| << 1) ``C`` sits far below ``c*``, so ``h`` is a near-constant
          learning-rate multiplier (about 1.28 with the CIFAR config rho=0.5, 1.02 with the GPT-1
          config) and ``e`` stays at 1; compare against AdamW at ``lr * h``, not at ``lr``.
        * A param group must live on one device (pooled sensors are gathered on the first group's).
          With several groups the foreach/compiled paths hold every group's step buffers at once
          (the sensors of all groups are needed before any group's update).
        * Low-precision params are rounded back to their dtype after each step (small updates of
          large bf16 weights are lost, as with torch's AdamW).

    Args:
        params: iterable of tensors or param-group dicts.
        lr: learning rate (1e-3).
        betas: Adam decays (b1, b2) ((0.9, 0.999)).
        eps: added to the bias-corrected sqrt(v) (1e-8).
        weight_decay: decoupled weight decay (1e-2).
        homeo_rate: rho, strength of the coherence gain h (0.03; CIFAR runs 0.5).
        coherence_target: c* (0.8).
        energy_target: E* (1e-3).
        lambda_energy: lam, strength of the energy gain e (0.1).
        memory_decays: (d1, d2) of the two gradient EMAs ((0.9, 0.99)).
        memory_weights: (w1, w2) of F ((0.6, 0.4)).
        flip_threshold: tau, importance below which the ascent term is added (0.2).
        ascent_strength: kappa (0.05).
        hierarchy: "hierarchical" (V6-H) or "global" (V6-G).
        memory_coef: weight of F in the step (0.05).
        grad_coef: weight of g~ in the step (0.01).
        global_share: a, weight of the global gains in the blend (0.3).
        global_strength: factor on rho and lam for the global gains of V6-H (0.5).
        global_energy_blend: b_g (0.9).
        local_energy_blend: b_l (0.8; also V6-G's gain).
        global_clamp: clip range of e_g ((0.925, 1.075)).
        local_clamp: clip range of e_l and of V6-G's e ((0.85, 1.15)).
        ascent_ramp: rate of the ramp 1 - exp(-ascent_ramp t) (0.02).
        importance_eps: added to mean sqrt(v) in I (1e-12).
        cosine_eps: floor on each norm in the cosine (1e-8, torch's default).
        symmetric_polarity: README reading of the polarity term (False = seed code).
        true_ascent: subtract the ascent term from g~ (False = seed code, which adds it).
        bias_correct_extras: divide the F and g~ terms by bc1 (True = seed code).
        wd_scaled_by_gains: decay by lr h e wd (False = seed code, lr wd).
        sensor_scope: "all_groups" (E_g, C_g over every param group) or "per_group" (the seed's g_cat).
        diag_every: compute the extra-term share for diagnostics every this many steps (10; 0 = never);
            it costs two extra passes over the parameters.
        foreach: None or True = the fast multi-tensor path (torch._foreach_*, no host syncs);
            False = the single-tensor reference loop (ground truth).
        compile: with foreach not False, run each tensor through two torch.compile'd fused kernels
            instead of ~25 foreach passes: True, False, or "auto" (default: compiled for param groups of
            at least 2^20 elements where torch.compile works, else foreach). Tensors under 2^14 elements
            (`optim._flat.SMALL_NUMEL`: biases, norm weights) go through the kernels together, gathered
            into flat buffers. Step time: `benchmarks/optim_step.py`. The first step compiles (tens of
            seconds on a 2-core CPU with a cold cache; the cache is on disk, so later processes pay only
            the tracing, a few seconds).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        homeo_rate: float = 0.03,
        coherence_target: float = 0.8,
        energy_target: float = 1e-3,
        lambda_energy: float = 0.1,
        memory_decays: tuple[float, float] = (0.9, 0.99),
        memory_weights: tuple[float, float] = (0.6, 0.4),
        flip_threshold: float = 0.2,
        ascent_strength: float = 0.05,
        hierarchy: str = "hierarchical",
        memory_coef: float = 0.05,
        grad_coef: float = 0.01,
        global_share: float = 0.3,
        global_strength: float = 0.5,
        global_energy_blend: float = 0.9,
        local_energy_blend: float = 0.8,
        global_clamp: tuple[float, float] = (0.925, 1.075),
        local_clamp: tuple[float, float] = (0.85, 1.15),
        ascent_ramp: float = 0.02,
        importance_eps: float = 1e-12,
        cosine_eps: float = 1e-8,
        symmetric_polarity: bool = False,
        true_ascent: bool = False,
        bias_correct_extras: bool = True,
        wd_scaled_by_gains: bool = False,
        sensor_scope: str = "all_groups",
        diag_every: int = 10,
        foreach: bool | None = None,
        compile: bool | str = "auto",
    ):
        def finite(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        for name, value in [("lr", lr), ("eps", eps), ("weight_decay", weight_decay),
                            ("homeo_rate", homeo_rate), ("lambda_energy", lambda_energy),
                            ("flip_threshold", flip_threshold), ("ascent_strength", ascent_strength),
                            ("memory_coef", memory_coef), ("grad_coef", grad_coef),
                            ("global_strength", global_strength), ("ascent_ramp", ascent_ramp)]:
            check_hp(finite(value) and value >= 0, name, value, "must be a finite number >= 0")
        for name, value in [("coherence_target", coherence_target), ("energy_target", energy_target)]:
            check_hp(finite(value), name, value, "must be a finite number")
        for name, value in [("importance_eps", importance_eps), ("cosine_eps", cosine_eps)]:
            check_hp(finite(value) and value > 0, name, value, "must be a finite number > 0")
        for name, value in [("global_share", global_share), ("global_energy_blend", global_energy_blend),
                            ("local_energy_blend", local_energy_blend)]:
            check_hp(finite(value) and 0 <= value <= 1, name, value, "must be in [0, 1]")
        check_betas(betas)
        check_betas(memory_decays, "memory_decays")
        check_hp(isinstance(memory_weights, (tuple, list)) and len(memory_weights) == 2
                 and all(finite(w) for w in memory_weights), "memory_weights", memory_weights,
                 "must be a pair of finite numbers")
        for name, value in [("global_clamp", global_clamp), ("local_clamp", local_clamp)]:
            check_hp(isinstance(value, (tuple, list)) and len(value) == 2 and all(finite(x) for x in value)
                     and 0 <= value[0] <= value[1], name, value, "must be a pair (lo, hi) with 0 <= lo <= hi")
        check_hp(hierarchy in _HIERARCHIES, "hierarchy", hierarchy, f"must be one of {list(_HIERARCHIES)}")
        check_hp(sensor_scope in _SENSOR_SCOPES, "sensor_scope", sensor_scope, f"must be one of {list(_SENSOR_SCOPES)}")
        for name, value in [("symmetric_polarity", symmetric_polarity), ("true_ascent", true_ascent),
                            ("bias_correct_extras", bias_correct_extras),
                            ("wd_scaled_by_gains", wd_scaled_by_gains)]:
            check_hp(isinstance(value, bool), name, value, "must be True or False")
        check_hp(isinstance(diag_every, int) and not isinstance(diag_every, bool) and diag_every >= 0,
                 "diag_every", diag_every, "must be an int >= 0")
        check_hp(foreach in (None, True, False), "foreach", foreach, "must be None, True or False")
        check_compile(compile)

        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, homeo_rate=homeo_rate,
            coherence_target=coherence_target, energy_target=energy_target, lambda_energy=lambda_energy,
            memory_decays=tuple(memory_decays), memory_weights=tuple(memory_weights),
            flip_threshold=flip_threshold, ascent_strength=ascent_strength, hierarchy=hierarchy,
            memory_coef=memory_coef, grad_coef=grad_coef, global_share=global_share,
            global_strength=global_strength, global_energy_blend=global_energy_blend,
            local_energy_blend=local_energy_blend, global_clamp=tuple(global_clamp),
            local_clamp=tuple(local_clamp), ascent_ramp=ascent_ramp, importance_eps=importance_eps,
            cosine_eps=cosine_eps, symmetric_polarity=symmetric_polarity, true_ascent=true_ascent,
            bias_correct_extras=bias_correct_extras, wd_scaled_by_gains=wd_scaled_by_gains,
            sensor_scope=sensor_scope, diag_every=diag_every, foreach=foreach, compile=compile,
        )
        super().__init__(params, defaults)
        self._init_run_state()

    _NAME = _NAME

    # ------------------------------------------------------------------ shared pieces

    @staticmethod
    def _work_dtype(p: torch.Tensor) -> torch.dtype:
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    def _init_state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = 0
            for key in _STATE_KEYS:
                state[key] = torch.zeros_like(p, dtype=self._work_dtype(p), memory_format=torch.preserve_format)
        return state

    # Host-side bookkeeping (Python-int step counters) runs outside any torch.compile'd region, so that
    # torch.compile(opt.step) does not guard on the counters and recompile every step.
    @torch.compiler.disable
    def _collect(self, group: dict):
        """Params with a gradient, their float32/float64 working copies and their states (step counters advanced)."""
        params, work, grads, states = [], [], [], []
        for p in group["params"]:
            if p.grad is None or p.numel() == 0:
                continue
            check_not_sparse(p.grad, _NAME)
            dt = self._work_dtype(p)
            params.append(p)
            # Low-precision params are updated through a float32 copy (written back after the step).
            work.append(p if p.dtype == dt else p.detach().to(dt))
            grads.append(p.grad if p.grad.dtype == dt else p.grad.to(dt))
            state = self._init_state(p)
            state["step"] += 1
            states.append(state)
        return params, work, grads, states

    @staticmethod
    @torch.compiler.disable
    def _host_scalars(group: dict, states, grads, sdt: torch.dtype, dev: torch.device):
        """Per-tensor step-dependent scalars as one [5, T] tensor on `dev` (rows: n, bc1, sqrt(bc2), 1/sqrt(bc2),
        ascent ramp) and whether this is a diagnostics step. No device sync: the counters are host ints."""
        b1, b2 = group["betas"]
        steps = [s["step"] for s in states]
        bc2s = [math.sqrt(1 - b2 ** t) for t in steps]
        host = torch.tensor([[g.numel() for g in grads], [1 - b1 ** t for t in steps], bc2s, [1 / x for x in bc2s],
                             [group["ascent_strength"] * (1 - math.exp(-group["ascent_ramp"] * t)) for t in steps]],
                            dtype=sdt).to(dev, non_blocking=True)
        return host, group["diag_every"] > 0 and steps[0] % group["diag_every"] == 0

    @staticmethod
    def _gains(group: dict, E_g, C_g, E_l, C_l):
        """(h, e, parts) from group sensors (0-d) and per-tensor sensors (any shape, broadcast)."""
        rho, lam = group["homeo_rate"], group["lambda_energy"]
        c_star, e_star = group["coherence_target"], group["energy_target"]
        llo, lhi = group["local_clamp"]
        b_l = group["local_energy_blend"]
        if group["hierarchy"] == "global":
            h = 1 - rho * torch.tanh(C_g - c_star)
            # 1 + b (x - 1) is b x + (1 - b) written so that lam = 0 gives exactly 1.
            e = torch.clamp(1 + b_l * lam * (e_star - E_g), llo, lhi)
            return h, e, {"h_g": h, "e_g": e}
        k, a = group["global_strength"], group["global_share"]
        glo, ghi = group["global_clamp"]
        h_g = 1 - k * rho * torch.tanh(C_g - c_star)
        e_g = torch.clamp(1 + group["global_energy_blend"] * k * lam * (e_star - E_g), glo, ghi)
        h_l = 1 - rho * torch.tanh(C_l - c_star)
        e_l = torch.clamp(1 + b_l * lam * (e_star - E_l), llo, lhi)
        # h_l + a (h_g - h_l) is a h_g + (1-a) h_l, exact when both are 1.
        h = h_l + a * (h_g - h_l)
        e = e_l + a * (e_g - e_l)
        return h, e, {"h_g": h_g, "e_g": e_g, "h_l": h_l, "e_l": e_l}

    def _record(self, gi: int, C_g, E_g, h, e, parts, fired) -> None:
        sfx = "" if gi == 0 else f"/group{gi}"
        vals = {"C_g": C_g, "E_g": E_g, "h_g": parts["h_g"], "e_g": parts["e_g"]}
        if "h_l" in parts:
            vals.update(h_local_mean=parts["h_l"].mean(), e_local_mean=parts["e_l"].mean())
        vals.update(h_mean=h.mean(), e_mean=e.mean(), h_min=h.min(), h_max=h.max(),
                    ascent_fired_share=fired.to(h.dtype).mean())
        self._diag.record_all({k + sfx: v for k, v in vals.items()})

    def _record_share(self, gi: int, extra_sq, adam_sq) -> None:
        """Extra-term share: ||(lr/bc1)(mc F + gc g~)|| / ||(lr/bc1) m/denom|| over the group, and max per tensor."""
        sfx = "" if gi == 0 else f"/group{gi}"
        self._diag.record_all({"extra_share" + sfx: (extra_sq.sum() / adam_sq.sum()).sqrt(),
                               "extra_share_max" + sfx: (extra_sq / adam_sq).sqrt().max()})

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One optimizer step; `closure` (re-evaluates the loss) runs under grad mode if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Each path is a generator: it yields its group's sensor sums (sum g^2, sum |tanh g|, N) and
        # receives (E_g, C_g), pooled over every group or its own, before it updates the parameters.
        runs = []
        for gi, group in enumerate(self.param_groups):
            params, work, grads, states = self._collect(group)
            if not params:
                continue
            if group["foreach"] is False:
                run = self._step_reference(gi, group, work, grads, states)
            elif use_compiled(group["compile"], sum(g.numel() for g in grads), grads[0].device):
                run = self._step_compiled(gi, group, work, grads, states)
            else:
                run = self._step_foreach(gi, group, work, grads, states)
            runs.append((group, params, work, run, next(run)))
        for (group, params, work, run, _), sensors in zip(runs, self._pool_sensors(runs)):
            try:
                run.send(sensors)
            except StopIteration:
                pass
            for p, w in zip(params, work):
                if w is not p:
                    p.copy_(w)
        return loss

    @staticmethod
    def _pool_sensors(runs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(E_g, C_g) per run: over every "all_groups" group together, or over the group's own sums."""
        pooled = [r[4] for r in runs if r[0]["sensor_scope"] == "all_groups"]
        if pooled:
            dev = pooled[0][0].device
            dt = torch.float64 if any(s[0].dtype == torch.float64 for s in pooled) else torch.float32
            tot = torch.stack([torch.stack(s).to(dev, dt) for s in pooled]).sum(0)
            every = (tot[0] / tot[2], tot[1] / tot[2])
        out = []
        for group, _, _, _, s in runs:
            if group["sensor_scope"] == "all_groups":
                out.append(tuple(x.to(s[0].device, s[0].dtype) for x in every))
            else:
                out.append((s[0] / s[2], s[1] / s[2]))
        return out

    def _step_reference(self, gi, group, work, grads, states) -> None:
        """Single-tensor loop, the ground truth (follows the seed's order of operations)."""
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        (d1, d2), (w1, w2) = group["memory_decays"], group["memory_weights"]
        mc, gc = group["memory_coef"], group["grad_coef"]
        sdt = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        g_cat = torch.cat([g.reshape(-1).to(sdt) for g in grads])
        E_g, C_g = yield (g_cat.pow(2).sum(), g_cat.tanh().abs().sum(), g_cat.new_tensor(float(g_cat.numel())))
        del g_cat
        diag_due = group["diag_every"] > 0 and states[0]["step"] % group["diag_every"] == 0
        hs, es, fireds, h_ls, e_ls, extra_sq, adam_sq = [], [], [], [], [], [], []
        parts = {}
        for p, g, state in zip(work, grads, states):
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            M1, M2 = state["memory_ema_1"], state["memory_ema_2"]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            M1.lerp_(g, 1 - d1)
            M2.lerp_(g, 1 - d2)
            F = w1 * M1 + w2 * M2

            c = torch.cosine_similarity(m.reshape(-1), g.reshape(-1), dim=0, eps=group["cosine_eps"])
            if group["symmetric_polarity"]:
                g_t = g * (1 + 0.5 * torch.tanh(c))
            else:
                g_t = g * (1 + 0.5 * torch.sign(g) * torch.tanh(c))
            importance = m.abs().mean() / (v.sqrt().mean() + group["importance_eps"])
            fired = bool(importance < group["flip_threshold"])
            if fired:
                ramp = group["ascent_strength"] * (1 - math.exp(-group["ascent_ramp"] * t))
                g_t = g_t - ramp * g if group["true_ascent"] else g_t + ramp * g

            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
            step_size = lr / bc1

            E_l = g.to(sdt).pow(2).mean()
            C_l = g.to(sdt).tanh().abs().mean()
            h, e, parts = self._gains(group, E_g, C_g, E_l, C_l)
            adam = m / denom
            extras = mc * F + gc * g_t
            if not group["bias_correct_extras"]:
                extras = extras * bc1
            if diag_due:
                extra_sq.append((step_size * extras).to(sdt).pow(2).sum())
                adam_sq.append((step_size * adam).to(sdt).pow(2).sum())
            decay = lr * wd * h * e if group["wd_scaled_by_gains"] else lr * wd
            p.mul_(1 - decay)
            p.sub_((adam + extras) * (step_size * h * e).to(p.dtype))
            hs.append(h)
            es.append(e)
            fireds.append(torch.tensor(fired))
            if "h_l" in parts:
                h_ls.append(parts["h_l"])
                e_ls.append(parts["e_l"])
        if h_ls:
            parts = {**parts, "h_l": torch.stack(h_ls), "e_l": torch.stack(e_ls)}
        self._record(gi, C_g, E_g, torch.stack(hs), torch.stack(es), parts, torch.stack(fireds))
        if diag_due:
            self._record_share(gi, torch.stack(extra_sq), torch.stack(adam_sq))

    def _step_foreach(self, gi, group, work, grads, states) -> None:
        """Multi-tensor path: torch._foreach_* ops, per-tensor scalars as device tensors, no host sync."""
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        (d1, d2), (w1, w2) = group["memory_decays"], group["memory_weights"]
        mc, gc = group["memory_coef"], group["grad_coef"]
        dev = grads[0].device
        sdt = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        m_l = [s["exp_avg"] for s in states]
        v_l = [s["exp_avg_sq"] for s in states]
        M1_l = [s["memory_ema_1"] for s in states]
        M2_l = [s["memory_ema_2"] for s in states]

        # Per-tensor host scalars (the step counters are Python ints, so no sync).
        host, diag_due = self._host_scalars(group, states, grads, sdt, dev)
        n_t, bc1_t, bc2s_t, _, ramp_t = host.unbind()

        def stack(xs):
            if len({x.dtype for x in xs}) > 1 or xs[0].dtype != sdt:
                xs = [x.to(sdt) for x in xs]
            return torch.stack(xs)

        def sums(xs):
            # Per-tensor .sum() beats _foreach_norm(ord=1) on CPU, and the inputs are >= 0.
            return stack([x.sum() for x in xs])

        g_norm = stack(torch._foreach_norm(grads, 2))
        torch._foreach_lerp_(m_l, grads, 1 - b1)
        torch._foreach_mul_(v_l, b2)
        torch._foreach_addcmul_(v_l, grads, grads, 1 - b2)
        torch._foreach_lerp_(M1_l, grads, 1 - d1)
        torch._foreach_lerp_(M2_l, grads, 1 - d2)

        # Cosine of (m, g) per tensor; torch.cosine_similarity floors each norm at eps.
        dots = stack([torch.dot(m.reshape(-1), g.reshape(-1)) for m, g in zip(m_l, grads)])
        m_norm = stack(torch._foreach_norm(m_l, 2))
        ce = group["cosine_eps"]
        half_tanh = 0.5 * torch.tanh(dots / (m_norm.clamp_min(ce) * g_norm.clamp_min(ce)))
        m_abs_sum = stack(torch._foreach_norm(m_l, 1))

        # Two scratch lists: `buf` (|g|, then the sensor, then denom) and `extras` (the step direction).
        buf = torch._foreach_abs(grads)
        extras = torch._foreach_mul(M1_l, mc * w1)
        torch._foreach_add_(extras, M2_l, alpha=mc * w2)
        # |tanh g| = 2 sigmoid(2|g|) - 1: torch's sigmoid is ~4x faster than its tanh on CPU.
        # (In float32 each term carries ~3e-8 absolute error; C only enters through tanh(C - c*).)
        # buf still holds |g| for the polarity term, added below once `a, b` are known.
        abs_g = buf

        # Denominator from v in a third pass over `buf` after the sensor; first the importance.
        sq = torch._foreach_sqrt(v_l)
        sqrt_v_sum = sums(sq)
        importance = (m_abs_sum / n_t) / (sqrt_v_sum / n_t + group["importance_eps"])
        fired = importance < group["flip_threshold"]
        ramp_t = torch.where(fired, ramp_t, torch.zeros_like(ramp_t))

        # g~ = a g + b |g|
        a = 1 - ramp_t if group["true_ascent"] else 1 + ramp_t
        if group["symmetric_polarity"]:
            a = a + half_tanh
        torch._foreach_addcmul_(extras, grads, (gc * a).to(grads[0].dtype).unbind())
        if not group["symmetric_polarity"]:
            torch._foreach_addcmul_(extras, abs_g, (gc * half_tanh).to(grads[0].dtype).unbind())
        if not group["bias_correct_extras"]:
            torch._foreach_mul_(extras, bc1_t.unbind())

        torch._foreach_mul_(abs_g, 2.0)
        torch._foreach_sigmoid_(abs_g)
        tanh_l1 = 2 * sums(abs_g) - n_t
        del abs_g, buf
        g_sq = g_norm * g_norm
        E_g, C_g = yield (g_sq.sum(), tanh_l1.sum(), n_t.sum())
        h, e, parts = self._gains(group, E_g, C_g, g_sq / n_t, tanh_l1 / n_t)
        h = h.expand_as(n_t)
        e = e.expand_as(n_t)

        # denom = sqrt(v)/sqrt(bc2) + eps
        torch._foreach_div_(sq, bc2s_t.unbind())
        torch._foreach_add_(sq, eps)
        step_size = lr / bc1_t
        if diag_due:
            adam = torch._foreach_div(m_l, sq)
            adam_sq = (stack(torch._foreach_norm(adam, 2)) * step_size) ** 2
            del adam
            extra_sq = (stack(torch._foreach_norm(extras, 2)) * step_size) ** 2
        torch._foreach_addcdiv_(extras, m_l, sq)
        del sq

        if group["wd_scaled_by_gains"]:
            decay = (1 - lr * wd * h * e).to(work[0].dtype).unbind()
            torch._foreach_mul_(work, decay)
        elif wd != 0:
            torch._foreach_mul_(work, 1 - lr * wd)
        coef = (-(step_size * h * e)).to(work[0].dtype).unbind()
        torch._foreach_addcmul_(work, extras, coef)

        self._record(gi, C_g, E_g, h, e, parts, fired)
        if diag_due:
            self._record_share(gi, extra_sq, adam_sq)

    def _step_compiled(self, gi, group, work, grads, states) -> None:
        """Two fused torch.compile kernels per tensor (sensors: reads g, m, v; update: moments, memories and
        parameter, written once; its norms for the diagnostics only on diagnostics steps); per-tensor scalars
        on the device.

        Tensors below `optim._flat.SMALL_NUMEL` elements (biases, norm weights) skip the per-call cost of a
        compiled kernel each: they are gathered into flat buffers and go through two compiled kernels of the
        same arithmetic, once for all of them, with per-element coefficients and per-tensor sums taken
        outside (`optim._flat.Gathered`).
        """
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        (d1, d2), (w1, w2) = group["memory_decays"], group["memory_weights"]
        mc, gc = group["memory_coef"], group["grad_coef"]
        dev = grads[0].device
        sdt = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        sensors, update = compiled(_sensors_kernel), compiled(_update_kernel)

        flat = alias_1d  # not x.view(-1): see optim._flat

        host, diag_due = self._host_scalars(group, states, grads, sdt, dev)
        n_t, bc1_t, _, inv_bc2s, ramp_t = host.unbind()
        if group["diag_every"] > 0:
            for dt in {w.dtype for w in work}:
                _warm_diag_kernels(dt, dev)
        big, buckets = partition(grads)
        sums = torch.empty(len(grads), 6, dtype=sdt, device=dev)
        if big:
            tensors = [[flat(x) for x in (grads[i], states[i]["exp_avg"], states[i]["exp_avg_sq"],
                                          states[i]["memory_ema_1"], states[i]["memory_ema_2"])] for i in big]
            sums[big] = torch.stack([sensors(*ts[:3], b1, b2).to(sdt) for ts in tensors])
        gathered = []
        for idx, bucket in buckets:
            ops = [bucket.gather([grads[i] for i in idx])]
            ops += [bucket.gather([states[i][k] for i in idx]) for k in _STATE_KEYS]
            sums[idx] = bucket.sums(compiled(_sensor_terms_kernel)(*ops[:3], b1, b2)).T.to(sdt)
            gathered.append(ops)
        g_sq, tanh_l1, dots, m_sq, m_abs_sum, sqrt_v_sum = sums.unbind(1)
        ce = group["cosine_eps"]
        half_tanh = 0.5 * torch.tanh(dots / (m_sq.sqrt().clamp_min(ce) * g_sq.sqrt().clamp_min(ce)))
        importance = (m_abs_sum / n_t) / (sqrt_v_sum / n_t + group["importance_eps"])
        fired = importance < group["flip_threshold"]
        ramp_t = torch.where(fired, ramp_t, torch.zeros_like(ramp_t))
        a = 1 - ramp_t if group["true_ascent"] else 1 + ramp_t
        if group["symmetric_polarity"]:
            a, b = a + half_tanh, torch.zeros_like(half_tanh)
        else:
            b = half_tanh
        extra_scale = torch.ones_like(bc1_t) if group["bias_correct_extras"] else bc1_t
        E_g, C_g = yield (g_sq.sum(), tanh_l1.sum(), n_t.sum())
        h, e, parts = self._gains(group, E_g, C_g, g_sq / n_t, tanh_l1 / n_t)
        h, e = h.expand_as(n_t), e.expand_as(n_t)
        step_size = lr / bc1_t
        decay = 1 - lr * wd * h * e if group["wd_scaled_by_gains"] else torch.full_like(n_t, 1 - lr * wd)
        coefs = torch.stack([inv_bc2s, torch.full_like(n_t, eps), extra_scale * mc * w1, extra_scale * mc * w2,
                             extra_scale * gc * a, extra_scale * gc * b, decay, -(step_size * h * e)], dim=1)
        norms = torch.zeros(len(grads), 2, dtype=sdt, device=dev)
        if big and diag_due:
            norms[big] = torch.stack([update(flat(work[i]), *ts, coefs[i].to(work[i].dtype).clone(), b1, b2, d1, d2)
                                      .to(sdt) for i, ts in zip(big, tensors)])
        elif big:
            apply = compiled(_apply_kernel)
            for i, ts in zip(big, tensors):
                apply(flat(work[i]), *ts, coefs[i].to(work[i].dtype).clone(), b1, b2, d1, d2)
        if big:
            bump_versions([work[i] for i in big] + [states[i][k] for i in big for k in _STATE_KEYS])
        for (idx, bucket), ops in zip(buckets, gathered):
            p_flat = bucket.gather([work[i] for i in idx])
            c_flat = bucket.expand(coefs[idx].T.to(p_flat.dtype))
            if diag_due:
                norms[idx] = bucket.sums(compiled(_update_terms_kernel)(p_flat, *ops, c_flat, b1, b2, d1, d2)).T.to(sdt)
            else:
                compiled(_apply_terms_kernel)(p_flat, *ops, c_flat, b1, b2, d1, d2)
            bucket.scatter(p_flat, [work[i] for i in idx])
            for k, x in zip(_STATE_KEYS, ops[1:]):
                bucket.scatter(x, [states[i][k] for i in idx])
        self._record(gi, C_g, E_g, h, e, parts, fired)
        if diag_due:
            self._record_share(gi, norms[:, 1] * step_size ** 2, norms[:, 0] * step_size ** 2)

    # ------------------------------------------------------------------ state and diagnostics

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts floating state to the param dtype; put low-precision params' state back in float32."""
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            saved = state_dict["state"].get(i)
            if saved is None or p.dtype in (torch.float32, torch.float64):
                continue
            for key in _STATE_KEYS:
                if key in saved:
                    self.state[p][key] = saved[key].to(device=p.device, dtype=torch.float32, copy=True)

    def diagnostics(self) -> dict[str, float]:
        """Internal signals since the last call, synced to the host once.

        Keys (group 0; other groups get a ``/group<i>`` suffix), each also as ``<key>_mean``:
        ``C_g, E_g`` (group coherence and energy), ``h_g, e_g`` (global gains; V6-G: the gains),
        ``h_local_mean, e_local_mean`` (V6-H: mean over tensors of h_l, e_l), ``h_mean, e_mean,
        h_min, h_max`` (the gains applied), ``ascent_fired_share`` (tensors with I < tau),
        ``extra_share, extra_share_max`` (every ``diag_every`` steps: norm of the memory+gradient
        terms over norm of the Adam term, group-wide and max per tensor).
        """
        return self._diag.read()


_V6_DEFAULTS: dict[str, Any] = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, homeo_rate=0.03, coherence_target=0.8,
    energy_target=1e-3, lambda_energy=0.1, memory_decays=(0.9, 0.99), memory_weights=(0.6, 0.4),
    flip_threshold=0.2, ascent_strength=0.05,
)

# Every gain exactly 1 and no extra terms: BiostatisV6 becomes torch.optim.AdamW.
_MECHANISMS_OFF = dict(homeo_rate=0.0, lambda_energy=0.0, memory_coef=0.0, grad_coef=0.0)

ENTRIES: list[Entry] = [
    Entry("biostatis_v6", BiostatisV6, {**_V6_DEFAULTS, "hierarchy": "hierarchical"}, "adamw",
          mechanisms_off=_MECHANISMS_OFF,
          summary="BiostatisV6 (V6-H): AdamW x hierarchical homeostatic gains (30% global, 70% local) + memory terms"),
    Entry("biostatis_v6_global", BiostatisV6, {**_V6_DEFAULTS, "hierarchy": "global"}, "adamw",
          mechanisms_off=_MECHANISMS_OFF,
          summary="BiostatisV6 (V6-G, GPT-1 variant): AdamW x group-level homeostatic gains + memory terms"),
]
