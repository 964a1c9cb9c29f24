"""NeuroPlastic: gradient steps scaled by a per-element plasticity coefficient, plus its design-space variants.

    from optirep import optim
    opt = optim.build("neuroplastic", model.parameters(), lr=0.1, warmup_epochs=2, plasticity_scale=2.0)
    for epoch in range(1, epochs + 1):
        opt.set_epoch(epoch)          # the warm-up and phase gates are per epoch (1-based, as the seed)
        ...
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ._base import BioOptimizer, check_betas, check_compile, check_hp, compiled, params_with_grad, use_compiled
from ._flat import alias_1d, bump_versions, partition
from .registry import Entry

_NAME = "NeuroPlastic"

# The seed hard-codes the three trace decays.
_ACTIVITY_DECAY = 0.95
_MOMENTUM_DECAY = 0.9
_VARIANCE_DECAY = 0.99
# The seed's floor inside the LR controller's log ratio.
_LOG_FLOOR = 1e-8

MODES = ("rule_based", "ablation_grad_only")
UPDATE_RULES = ("classic", "bounded_residual", "orthogonal_residual", "hybrid")
CONTROLLER_MODES = ("off", "global", "layerwise", "classifier_only")
ORTHOGONAL_SCHEDULES = ("constant", "late", "cosine")
HYBRID_BASES = ("adamw", "sgd_momentum")
HYBRID_TARGETS = ("gain", "momentum", "trust_ratio")
PHASE_SCOPES = ("all", "early", "middle", "late")
LAYER_SCOPES = ("all", "early_blocks", "late_blocks", "classifier")
PHASE_BOUNDARIES = ("seed", "thirds")
SENSOR_SCOPES = ("all_groups", "per_group")
# Layer groups by parameter order (the seed's "stem" group is unreachable and left out).
_LAYER_NAMES = ("early_blocks", "late_blocks", "classifier")
# Label of the middle body tensor when the body count is odd: "early_blocks" for the LR controller and in
# both the early_blocks and the late_blocks layer scope (the seed's ceil/floor split).
_MIDDLE = 3


def _trace_terms(g, a, m, v, eps: float) -> list[torch.Tensor]:
    """Trace EMAs in place; returns the per-element |g|, a and |m| / (sqrt(v) + eps) (traces updated)."""
    absg = g.abs()
    a.lerp_(absg, 1.0 - _ACTIVITY_DECAY)
    m.lerp_(g, 1.0 - _MOMENTUM_DECAY)
    v.mul_(_VARIANCE_DECAY).addcmul_(g, g, value=1.0 - _VARIANCE_DECAY)
    return [absg, a, m.abs() / (v.sqrt() + eps)]


def _traces_kernel(g, a, m, v, eps: float):
    """`_trace_terms` summed over the tensor: the per-tensor sums of |g|, a and |m| / (sqrt(v) + eps)."""
    return torch.stack([x.sum() for x in _trace_terms(g, a, m, v, eps)])


def _trace_terms_kernel(g, a, m, v, eps: float):
    """`_trace_terms` as one [3, n] tensor (gathered small tensors; summed per tensor by the caller)."""
    return torch.stack(_trace_terms(g, a, m, v, eps))


def _classic_update(p, g, a, m, v, k):
    """u = alpha g (+ wd p) for the classic rule, with k = [1/dg, wa/da, wg/dg, wm/dm, amin, amax, c, wd, eps]
    ([9], or [9, n] per element); p None: no weight-decay term (not read: one array less per step)."""
    absg = g.abs()
    G = absg * k[0]
    alpha_g = G.clamp(k[4], k[5])
    ratio = m.abs() / (v.sqrt() + k[8])
    fused = ratio * k[3] + a * k[1] + absg * k[2]
    alpha = torch.lerp(alpha_g, fused.clamp(k[4], k[5]), k[6])
    return alpha * g if p is None else alpha * g + k[7] * p


def _classic_kernel(out, p, g, a, m, v, k):
    """`_classic_update` written into `out` (a buffer reused across steps: a fresh output per call costs more
    than the arithmetic on CPU); returns sum(u^2)."""
    u = _classic_update(p, g, a, m, v, k)
    out.copy_(u)
    return (u * u).sum()


def _classic_terms_kernel(p, g, a, m, v, k):
    """`_classic_update` with per-element k ([9, n]): returns u and u^2 per element."""
    u = _classic_update(p, g, a, m, v, k)
    return u, u * u


def _gradonly_update(p, g, k):
    """u = clamp(|g| / dg) g (+ wd p) for the gradient-only ablation, k = [1/dg, amin, amax, wd] ([4] or [4, n]);
    p None: no weight-decay term."""
    u = (g.abs() * k[0]).clamp(k[1], k[2]) * g
    return u if p is None else u + k[3] * p


def _gradonly_kernel(out, p, g, k):
    """`_gradonly_update` written into `out`; returns sum(u^2)."""
    u = _gradonly_update(p, g, k)
    out.copy_(u)
    return (u * u).sum()


def _gradonly_terms_kernel(p, g, k):
    """`_gradonly_update` with per-element k ([4, n]): returns u and u^2 per element."""
    u = _gradonly_update(p, g, k)
    return u, u * u


class NeuroPlastic(BioOptimizer):
    """NeuroPlastic (arXiv:2604.26297): SGD whose gradient is scaled per element by a plasticity coefficient.

    Seed:
        arXiv:2604.26297 and Sunnylincc/NeuroPlastic-Optimizer @ d96dc2a (classic path as at 76ff436),
        as specified in section 4 of the project's seeds spec (seed 001).

    Math:
        Per parameter tensor p with gradient g (all statistics per tensor, mean(.) over its elements),
        states a (activity), m, v start at zero:
            a <- 0.95 a + 0.05 |g|;  m <- 0.9 m + 0.1 g;  v <- 0.99 v + 0.01 g^2   (no bias correction)
            N(x) = x / (mean(x) + eps)
            G = N(|g|),  Act = N(a),  Mem = N(|m| / (sqrt(v) + eps))
            alpha_g = clip(G, amin, amax)
            alpha_f = clip(w_a Act + w_g G + w_m Mem, amin, amax)
            (parameterwise=False: each is clip(mean(.)) of its signal, a per-tensor scalar)
            gate = 1 if warmup_epochs == 0 else clip((epoch - 1) / warmup_epochs, 0, 1)
            alpha = alpha_g + gate * plasticity_scale * (alpha_f - alpha_g)    (NOT re-clipped)
            mode "ablation_grad_only": alpha = alpha_g and no trace state at all.
        Update direction u by `update_rule`:
            classic:              u = alpha g
            bounded_residual:     r = (alpha - 1) g clipped to ||r|| <= residual_max_ratio ||g||;  u = g + r
            orthogonal_residual:  if ||g||^2 <= eps: q = 0 (the seed's small-gradient skip), else
                                  q = (alpha - alpha_g) g minus its projection on g
                                  (q <- q ||g|| / (||q|| + eps) if match_grad_norm and ||q|| > eps),
                                  q <- orthogonal_lambda * schedule(progress) * q, clipped to
                                  orthogonal_max_ratio ||g||;  u = g + q
            hybrid:               base = adamw: m_hat / (sqrt(v_hat) + eps) (own buffers, betas base_betas,
                                  bias-corrected) | sgd_momentum: b <- base_momentum b + (g + wd p);
                                  s = alpha - 1; delta = s base (gain) | s m_ref (momentum: m_hat or b)
                                  | s (clip(||p|| / (||base|| + clip_eps), 0.5, 1.5) - 1) base (trust_ratio);
                                  delta <- modulation_strength * phase_gate * layer_gate * delta, clipped to
                                  modulation_max_ratio ||base||;  u = base + delta
            "x clipped to ||x|| <= L" is x <- x L / (||x|| + e) where ||x|| > L, with e = clip_eps (1e-12, the
            seed's) for r and delta, e = eps for q (as the seed).
        Weight decay: coupled u <- u + wd p (classic/residual rules, decoupled_weight_decay=False);
            p <- p (1 - lr_eff wd) before the step for decoupled_weight_decay=True and the AdamW hybrid;
            inside the momentum buffer for the SGD hybrid.
        Homeostatic stabiliser: if ||u|| > max_update_norm: u <- u max_update_norm / (||u|| + eps);
            rms = sqrt(mean(u^2) + eps); u <- clip(1 + adaptation_rate (target_rms - rms), 0.5, 1.5) u.
        LR controller (lr_controller_mode != off): sigma = mean(log(max(alpha, 1e-8) / max(alpha_g, 1e-8)))
            per tensor (non-finite -> 0; 0 in the ablation mode); mult = clip(1 + lr_controller_strength *
            mean(sigma), lr_controller_low, lr_controller_high) with the mean over all tensors (global), over
            the tensor's layer group (layerwise) or over the classifier only (classifier_only; others 1), pooled
            over every param group (sensor_scope="all_groups") or within the tensor's own param group
            ("per_group", the seed's).
        Layer groups (LR controller, layer_scope) by position in the layer order: `param_order`'s (the model's
            order, e.g. model.parameters()) if given, else every param group's tensors one group after another;
            zero-element tensors left out. classifier = the last 2, body = the B before them;
            early_blocks = body index < ceil(B/2), late_blocks = body index >= floor(B/2). With B odd the middle
            tensor is in both layer scopes and counts as early_blocks for the controller (the seed's split).
        p <- p - lr_eff u,  lr_eff = lr * mult.
        progress = epoch / T with T = total_epochs (set_total_epochs) or 1; phase gates
            (phase_boundaries="seed"): early progress <= 0.3, middle 0.3 < progress < 0.7, late >= 0.7
            ("thirds": early < 1/3, middle [1/3, 2/3), late >= 2/3); orthogonal schedule: constant 1,
            late min(max(progress - s, 0) / (1 - s), 1) with s = orthogonal_late_start (0.3; 0 up to s, then a
            linear ramp), cosine (1 - cos(pi min(progress, 1))) / 2.
        epoch: set by set_epoch(epoch) (1-based), or with steps_per_epoch=S derived before every step as
            steps_taken // S + 1 (for trainers that never call set_epoch).

    Deviations from the seed:
        * State is allocated per mode: classic/residual/orthogonal = activity, momentum, variance (3P);
          ablation_grad_only = none; hybrid adds 2P (adamw) or 1P (sgd_momentum). The seed at HEAD
          allocates 5P for every mode. The math is unchanged.
        * Diagnostics are computed on the device every `diag_every` steps and synced once per
          `diagnostics()` call; the seed syncs ~20 times and builds a CPU histogram per tensor per step.
        * The seed's runner never calls set_total_epochs, so T = 1, "late" is always on and
          early/middle always off. That is the default here (total_epochs=None); pass
          `total_epochs=<epochs>` (or call set_total_epochs) for the intended phase gates.
        * [A] The cosine schedule's direction (ramp up), the layer gate (`layer_scope`), `hybrid_target`
          default "gain", `match_grad_norm` default False, orthogonal/hybrid defaults
          `orthogonal_schedule="constant"`, `phase_scope="all"`, m_ref = bias-corrected Adam m / SGD buffer,
          and the LR controller using the current step's sigma are not recorded in the spec: they follow the
          seed's code (d96dc2a), each is a flag. So do the phase boundaries 0.3/0.7 (`phase_boundaries="thirds"`
          gives the thirds an earlier version of this class used) and the 1e-12 in the bounded-residual and
          modulation clips and the trust ratio (`clip_eps`; 1e-8 = eps gives that earlier version's).
        * The LR controller pools sigma over every param group (`sensor_scope="all_groups"`); the seed
          averages within each param group (`sensor_scope="per_group"`). Identical with one group, as in
          every seed run; pooling keeps a no-decay grouping (biases and norms in a second group) from
          changing the algorithm.
        * Zero-element parameters are skipped and left out of the layer order (the seed would divide by
          their empty mean).
        * `steps_per_epoch` (not in the seed) derives the epoch from the step count.
        * `param_order` (not in the seed) labels layers by model order whatever the param-group layout. The
          seed passes one group in model.parameters() order, whose labels this reproduces exactly.
        * [A] The spec's stabiliser set-point `target_rms * scale_layer` leaves scale_layer undefined;
          taken as 1.
        * `layerwise` (unused in the seed since 72ec610) is not implemented.
        * The trace EMAs are computed with lerp (a + 0.05 (|g| - a)); equal to the seed's
          0.95 a + 0.05 |g| up to rounding.

    Warnings:
        * alpha is not re-clipped after mixing: with plasticity_scale=2 it lies in [2 amin - amax,
          2 amax - amin] = [-1.6, 3.8], so some elements ascend the loss (see diagnostics
          `alpha_frac_negative`).
        * With max_update_norm=1 every tensor's step is at most lr in norm; with the hybrid AdamW base
          (norm ~ sqrt(n)) that clip rescales nearly every step: the hybrid is then a per-tensor
          normalised Adam, not AdamW (flag max_update_norm=inf to remove it).
        * `set_epoch` must be called by the training loop (or `steps_per_epoch` given), or the warm-up gate
          stays at epoch 1 (alpha = alpha_g when warmup_epochs > 0); the first step() warns once when an
          epoch-gated mechanism is active and neither is used. optirep's `train` calls set_epoch; PyTorch
          Lightning and the Hugging Face Trainer do not: pass steps_per_epoch=len(train_loader) there.
        * Without `param_order`, layer labels follow the order the parameters are given in. A grouping that
          moves tensors to a later group (e.g. no-decay biases) changes which tensors are "classifier" (and so
          the layerwise/classifier_only controller's and `layer_scope`'s steps, and the global controller's
          lr_multiplier_<layer> diagnostics). The first step() warns once when a mechanism whose steps depend
          on the labels is active over several param groups without `param_order` (not for the global
          controller, whose steps do not); pass param_order=model.parameters(). The names torch
          keeps from named_parameters() input (`param_names`) do not give the model's order (registration
          order is not recoverable from names), so nothing is inferred from them.

    Args:
        params: parameters or param groups.
        lr: learning rate (seed class default 1e-3; the paper's locked config uses 0.1).
        weight_decay: L2 coefficient (default 0).
        mode: "rule_based" (full method) or "ablation_grad_only" (alpha = alpha_g).
        activity_weight, gradient_weight, memory_weight: w_a, w_g, w_m (0.4, 0.4, 0.2).
        amin, amax: clamp of alpha_g and alpha_f (0.2, 2.0; the grad-only ablation config uses 0.5, 1.5).
        parameterwise: per-element coefficients (True) or per-tensor means (False).
        warmup_epochs: epochs over which the full coefficient is blended in (0).
        plasticity_scale: ps (1.0; locked config 2.0).
        eps: 1e-8, used in every normalisation and the Adam base.
        max_update_norm, target_rms, adaptation_rate: homeostatic stabiliser (1.0, 0.02, 0.01).
        decoupled_weight_decay: apply weight decay as p <- p (1 - lr wd) (False).
        update_rule: "classic", "bounded_residual", "orthogonal_residual" or "hybrid".
        lr_controller_mode: "off", "global", "layerwise" or "classifier_only".
        lr_controller_strength, lr_controller_low, lr_controller_high: 0.1, 0.8, 1.2.
        residual_max_ratio: 0.5.
        orthogonal_lambda, orthogonal_max_ratio, orthogonal_schedule, match_grad_norm: 0.1, 0.5,
            "constant", False.
        hybrid_base: "adamw" or "sgd_momentum"; hybrid_target: "gain", "momentum" or "trust_ratio".
        modulation_strength, modulation_max_ratio: 0.15, 0.25.
        base_betas: Adam base betas (0.9, 0.999); base_momentum: SGD base momentum 0.9.
        phase_scope: "all", "early", "middle", "late"; layer_scope: "all", "early_blocks",
            "late_blocks", "classifier" (hybrid modulation gates).
        total_epochs: None (seed: T = 1) or the run's epoch count for the phase gates.
        phase_boundaries: "seed" (0.3/0.7) or "thirds".
        orthogonal_late_start: s of the "late" orthogonal schedule (0.3).
        clip_eps: denominator floor of the bounded-residual and modulation clips and the trust ratio (1e-12).
        sensor_scope: "all_groups" (the LR controller pools every param group) or "per_group" (the seed's).
        steps_per_epoch: None (the epoch comes from set_epoch) or the number of steps per epoch.
        param_order: None (layer order = param groups' order) or an iterable of the model's parameters in
            model order (`model.parameters()` or `model.named_parameters()`) that the layer labels follow,
            whatever the grouping. Must hold every optimized tensor (ValueError naming the first missing
            one); others (frozen ones) are ignored. Kept as flat indices in `state_dict()["run_state"]`;
            `set_param_order()` re-sets it (tensors of groups added later come after the ordered ones).
        diag_every: compute diagnostics every this many steps (0 = never; default 50).
        foreach: None/True = fast `torch._foreach_*` path, False = single-tensor reference loop.
        compile: True, False or "auto" (default): steps of the classic rule (rule_based or
            ablation_grad_only, parameterwise, no LR controller) that record no diagnostics run each
            tensor through torch.compile'd fused kernels instead of ~20 foreach passes; "auto" does so
            for param groups of at least 2^20 elements where torch.compile works. Other settings and
            diagnostic steps use the foreach path (equal to rounding). Tensors under 2^14 elements
            (`optim._flat.SMALL_NUMEL`) go through the kernels together, gathered into flat buffers; the
            update direction u of the larger ones is written into buffers kept across steps (one
            parameter's worth of memory, not saved in state_dict).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        mode: str = "rule_based",
        activity_weight: float = 0.4,
        gradient_weight: float = 0.4,
        memory_weight: float = 0.2,
        amin: float = 0.2,
        amax: float = 2.0,
        parameterwise: bool = True,
        warmup_epochs: int = 0,
        plasticity_scale: float = 1.0,
        eps: float = 1e-8,
        max_update_norm: float = 1.0,
        target_rms: float = 0.02,
        adaptation_rate: float = 0.01,
        decoupled_weight_decay: bool = False,
        update_rule: str = "classic",
        lr_controller_mode: str = "off",
        lr_controller_strength: float = 0.1,
        lr_controller_low: float = 0.8,
        lr_controller_high: float = 1.2,
        residual_max_ratio: float = 0.5,
        orthogonal_lambda: float = 0.1,
        orthogonal_max_ratio: float = 0.5,
        orthogonal_schedule: str = "constant",
        match_grad_norm: bool = False,
        hybrid_base: str = "adamw",
        hybrid_target: str = "gain",
        modulation_strength: float = 0.15,
        modulation_max_ratio: float = 0.25,
        base_betas: tuple[float, float] = (0.9, 0.999),
        base_momentum: float = 0.9,
        phase_scope: str = "all",
        layer_scope: str = "all",
        total_epochs: int | None = None,
        phase_boundaries: str = "seed",
        orthogonal_late_start: float = 0.3,
        clip_eps: float = 1e-12,
        sensor_scope: str = "all_groups",
        steps_per_epoch: int | None = None,
        param_order=None,
        diag_every: int = 50,
        foreach: bool | None = None,
        compile: bool | str = "auto",
    ) -> None:
        check_hp(lr >= 0.0, "lr", lr, "must be >= 0")
        check_hp(weight_decay >= 0.0, "weight_decay", weight_decay, "must be >= 0")
        check_hp(mode in MODES, "mode", mode, f"must be one of {', '.join(MODES)}")
        for name, w in (("activity_weight", activity_weight), ("gradient_weight", gradient_weight),
                        ("memory_weight", memory_weight)):
            check_hp(math.isfinite(w), name, w, "must be finite")
        check_hp(amin >= 0.0, "amin", amin, "must be >= 0")
        check_hp(amax >= amin, "amax", amax, f"must be >= amin ({amin})")
        check_hp(isinstance(warmup_epochs, int) and warmup_epochs >= 0, "warmup_epochs", warmup_epochs,
                 "must be an int >= 0")
        check_hp(plasticity_scale >= 0.0, "plasticity_scale", plasticity_scale, "must be >= 0")
        check_hp(eps > 0.0, "eps", eps, "must be > 0")
        check_hp(max_update_norm > 0.0, "max_update_norm", max_update_norm, "must be > 0 (inf turns the clip off)")
        check_hp(target_rms >= 0.0, "target_rms", target_rms, "must be >= 0")
        check_hp(adaptation_rate >= 0.0, "adaptation_rate", adaptation_rate, "must be >= 0")
        check_hp(update_rule in UPDATE_RULES, "update_rule", update_rule, f"must be one of {', '.join(UPDATE_RULES)}")
        check_hp(lr_controller_mode in CONTROLLER_MODES, "lr_controller_mode", lr_controller_mode,
                 f"must be one of {', '.join(CONTROLLER_MODES)}")
        check_hp(lr_controller_strength >= 0.0, "lr_controller_strength", lr_controller_strength, "must be >= 0")
        check_hp(0.0 < lr_controller_low <= 1.0, "lr_controller_low", lr_controller_low, "must be in (0, 1]")
        check_hp(lr_controller_high >= 1.0, "lr_controller_high", lr_controller_high, "must be >= 1")
        check_hp(residual_max_ratio >= 0.0, "residual_max_ratio", residual_max_ratio, "must be >= 0")
        check_hp(orthogonal_lambda >= 0.0, "orthogonal_lambda", orthogonal_lambda, "must be >= 0")
        check_hp(orthogonal_max_ratio >= 0.0, "orthogonal_max_ratio", orthogonal_max_ratio, "must be >= 0")
        check_hp(orthogonal_schedule in ORTHOGONAL_SCHEDULES, "orthogonal_schedule", orthogonal_schedule,
                 f"must be one of {', '.join(ORTHOGONAL_SCHEDULES)}")
        check_hp(hybrid_base in HYBRID_BASES, "hybrid_base", hybrid_base, f"must be one of {', '.join(HYBRID_BASES)}")
        check_hp(hybrid_target in HYBRID_TARGETS, "hybrid_target", hybrid_target,
                 f"must be one of {', '.join(HYBRID_TARGETS)}")
        check_hp(modulation_strength >= 0.0, "modulation_strength", modulation_strength, "must be >= 0")
        check_hp(modulation_max_ratio >= 0.0, "modulation_max_ratio", modulation_max_ratio, "must be >= 0")
        check_betas(base_betas, "base_betas")
        check_hp(0.0 <= base_momentum < 1.0, "base_momentum", base_momentum, "must be in [0, 1)")
        check_hp(phase_scope in PHASE_SCOPES, "phase_scope", phase_scope, f"must be one of {', '.join(PHASE_SCOPES)}")
        check_hp(layer_scope in LAYER_SCOPES, "layer_scope", layer_scope, f"must be one of {', '.join(LAYER_SCOPES)}")
        check_hp(total_epochs is None or (isinstance(total_epochs, int) and total_epochs >= 1), "total_epochs",
                 total_epochs, "must be None or an int >= 1")
        check_hp(phase_boundaries in PHASE_BOUNDARIES, "phase_boundaries", phase_boundaries,
                 f"must be one of {', '.join(PHASE_BOUNDARIES)}")
        check_hp(0.0 <= orthogonal_late_start < 1.0, "orthogonal_late_start", orthogonal_late_start, "must be in [0, 1)")
        check_hp(clip_eps > 0.0, "clip_eps", clip_eps, "must be > 0")
        check_hp(sensor_scope in SENSOR_SCOPES, "sensor_scope", sensor_scope, f"must be one of {', '.join(SENSOR_SCOPES)}")
        check_hp(steps_per_epoch is None or (isinstance(steps_per_epoch, int) and not isinstance(steps_per_epoch, bool)
                                             and steps_per_epoch >= 1), "steps_per_epoch", steps_per_epoch,
                 "must be None or an int >= 1")
        check_hp(isinstance(diag_every, int) and diag_every >= 0, "diag_every", diag_every, "must be an int >= 0")
        check_hp(foreach in (None, True, False), "foreach", foreach, "must be None, True or False")
        check_compile(compile)
        defaults = dict(
            lr=lr, weight_decay=weight_decay, mode=mode, activity_weight=activity_weight,
            gradient_weight=gradient_weight, memory_weight=memory_weight, amin=amin, amax=amax,
            parameterwise=parameterwise, warmup_epochs=warmup_epochs, plasticity_scale=plasticity_scale, eps=eps,
            max_update_norm=max_update_norm, target_rms=target_rms, adaptation_rate=adaptation_rate,
            decoupled_weight_decay=decoupled_weight_decay, update_rule=update_rule,
            lr_controller_mode=lr_controller_mode, lr_controller_strength=lr_controller_strength,
            lr_controller_low=lr_controller_low, lr_controller_high=lr_controller_high,
            residual_max_ratio=residual_max_ratio, orthogonal_lambda=orthogonal_lambda,
            orthogonal_max_ratio=orthogonal_max_ratio, orthogonal_schedule=orthogonal_schedule,
            match_grad_norm=match_grad_norm, hybrid_base=hybrid_base, hybrid_target=hybrid_target,
            modulation_strength=modulation_strength, modulation_max_ratio=modulation_max_ratio,
            base_betas=tuple(base_betas), base_momentum=base_momentum, phase_scope=phase_scope,
            layer_scope=layer_scope, total_epochs=total_epochs, phase_boundaries=phase_boundaries,
            orthogonal_late_start=orthogonal_late_start, clip_eps=clip_eps, sensor_scope=sensor_scope,
            diag_every=diag_every, foreach=foreach, compile=compile, epoch=1,
        )
        self._steps_per_epoch = steps_per_epoch
        super().__init__(params, defaults)
        # self._run["steps"]: host-side step counter (diagnostics gate, steps_per_epoch); "epoch_set": whether
        # set_epoch was ever called. Both travel in state_dict()["run_state"].
        self._init_run_state()
        self._run.update(steps=0, epoch_set=False)
        if param_order is not None:
            self.set_param_order(param_order)

    _NAME = _NAME
    _RUN_KEYS = ("epoch", "total_epochs")

    # ---------------------------------------------------------------- epoch gating
    def set_epoch(self, epoch: int) -> None:
        """Store the current (1-based) epoch in every param group; the warm-up and phase gates read it."""
        check_hp(isinstance(epoch, int) and epoch >= 0, "epoch", epoch, "must be an int >= 0")
        self._run["epoch_set"] = True
        for group in self.param_groups:
            group["epoch"] = epoch

    def set_total_epochs(self, total_epochs: int) -> None:
        """Store the run's epoch count (the seed's runner never calls this: T stays 1)."""
        check_hp(isinstance(total_epochs, int) and total_epochs >= 1, "total_epochs", total_epochs,
                 "must be an int >= 1")
        for group in self.param_groups:
            group["total_epochs"] = total_epochs

    @staticmethod
    def _mix_weight(group: dict) -> float:
        """gate(epoch) * plasticity_scale; 0 in the ablation mode."""
        if group["mode"] == "ablation_grad_only":
            return 0.0
        w = group["warmup_epochs"]
        gate = 1.0 if w == 0 else min(max((group["epoch"] - 1) / w, 0.0), 1.0)
        return gate * group["plasticity_scale"]

    @staticmethod
    def _progress(group: dict) -> float:
        return group["epoch"] / (group["total_epochs"] or 1)

    @classmethod
    def _phase_gate(cls, group: dict) -> float:
        scope, t = group["phase_scope"], cls._progress(group)
        if scope == "all":
            return 1.0
        if group["phase_boundaries"] == "seed":  # the seed's _phase_gate (d96dc2a)
            return float(t <= 0.3 if scope == "early" else 0.3 < t < 0.7 if scope == "middle" else t >= 0.7)
        if scope == "early":
            return float(t < 1 / 3)
        if scope == "middle":
            return float(1 / 3 <= t < 2 / 3)
        return float(t >= 2 / 3)

    @classmethod
    def _orthogonal_gate(cls, group: dict) -> float:
        sched, t = group["orthogonal_schedule"], cls._progress(group)
        if sched == "constant":
            return 1.0
        if sched == "late":
            s = group["orthogonal_late_start"]
            return 0.0 if t <= s else min((t - s) / (1.0 - s), 1.0)
        return 0.5 * (1.0 - math.cos(math.pi * min(t, 1.0)))

    def set_param_order(self, params) -> None:
        """Take the layer labels from `params`' order (e.g. `model.parameters()` or `model.named_parameters()`)
        instead of the param groups' order.

        Stored as flat indices into the param groups (`run_state["param_order"]` of `state_dict()`), so a
        checkpoint, deepcopy or pickle keeps it without holding tensors. Tensors of `params` that this
        optimizer does not hold (e.g. frozen ones) are ignored; tensors of a group added later with
        `add_param_group` come after the ordered ones until this is called again.

        Raises:
            ValueError: a parameter of the optimizer is not in `params` (names its group, index and shape).
        """
        flat = [p for g in self.param_groups for p in g["params"]]
        index = {id(p): i for i, p in enumerate(flat)}
        order: list[int] = []
        for p in params:
            if isinstance(p, tuple):  # (name, tensor) pairs of named_parameters()
                p = p[1]
            i = index.pop(id(p), None)
            if i is not None:
                order.append(i)
        if index:
            i = min(index.values())
            g, k = self._position(i)
            raise ValueError(f"{_NAME}: param_order lacks {len(index)} of the optimizer's parameters, the first "
                             f"parameter {k} of param group {g} (shape {tuple(flat[i].shape)}); pass every "
                             "optimized tensor, e.g. param_order=model.parameters()")
        self._run["param_order"] = order

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load plus the run state; a saved `param_order` (flat indices) replaces the current one.

        Raises:
            ValueError: run_state["param_order"] is not a permutation of 0..k-1 with k at most the number of
                parameters (checked before anything is loaded).
        """
        order = (state_dict.get("run_state") or {}).get("param_order")
        n = sum(len(g["params"]) for g in state_dict["param_groups"])
        if order is not None and (not isinstance(order, list) or sorted(order) != list(range(len(order)))
                                  or len(order) > n):
            raise ValueError(f"{_NAME}: state_dict run_state['param_order'] must be a list holding a permutation "
                             f"of 0..k-1 with k <= {n} (the number of parameters); got {order!r}")
        super().load_state_dict(state_dict)

    def _position(self, flat_index: int) -> tuple[int, int]:
        """(param group, index within it) of the flat parameter index."""
        for g, group in enumerate(self.param_groups):
            if flat_index < len(group["params"]):
                return g, flat_index
            flat_index -= len(group["params"])
        raise IndexError(flat_index)

    def _layer_order(self) -> list[torch.Tensor]:
        """The optimizer's parameters in label order: param_order's, else the param groups' one after another."""
        flat = [p for g in self.param_groups for p in g["params"]]
        order = self._run.get("param_order")
        if order is None:
            return flat
        return [flat[i] for i in order] + flat[len(order):]

    def _layer_labels(self) -> dict[int, int]:
        """id(p) -> 0 early_blocks, 1 late_blocks, 2 classifier, _MIDDLE (odd body: the middle tensor), by
        position in the layer order (`_layer_order`); zero-element tensors are left out."""
        order = [p for p in self._layer_order() if p.numel() > 0]
        body = max(len(order) - 2, 0)
        early_end, late_start = math.ceil(body / 2), body // 2
        labels = {}
        for i, p in enumerate(order):
            if i >= body:
                labels[id(p)] = 2
            elif late_start <= i < early_end:
                labels[id(p)] = _MIDDLE
            else:
                labels[id(p)] = 0 if i < early_end else 1
        return labels

    def _check_layer_order(self) -> None:
        """Warn once if layer labels are read while several param groups stand in for the model order."""
        if "param_order" in self._run or sum(1 for g in self.param_groups if g["params"]) < 2:
            return
        users = []
        for g in self.param_groups:
            mode = g["lr_controller_mode"]
            if mode in ("layerwise", "classifier_only"):  # "global": only its per-layer diagnostics; no warning
                users.append(f"lr_controller_mode={mode!r}")
            if g["update_rule"] == "hybrid" and g["layer_scope"] != "all":
                users.append(f"layer_scope={g['layer_scope']!r}")
        if users:
            self._warn_once("layer_order", f"{_NAME}: {', '.join(dict.fromkeys(users))} labels layers by position "
                            f"(classifier = the last 2 tensors), taken over the {len(self.param_groups)} param "
                            "groups one after another; that is not the model's order when e.g. biases and norms "
                            "sit in a later no-decay group. Pass param_order=model.parameters() (or call "
                            "opt.set_param_order(model.parameters())) to label by model order")

    # ---------------------------------------------------------------- state
    @staticmethod
    def _init_state(p: torch.Tensor, state: dict, group: dict) -> None:
        if state:
            return
        state["step"] = torch.tensor(0.0)
        zeros = lambda: torch.zeros_like(p, memory_format=torch.preserve_format)  # noqa: E731
        if group["mode"] == "rule_based":
            state["activity"] = zeros()
            state["momentum"] = zeros()
            state["variance"] = zeros()
        if group["update_rule"] == "hybrid":
            if group["hybrid_base"] == "adamw":
                state["base_exp_avg"] = zeros()
                state["base_exp_avg_sq"] = zeros()
            else:
                state["base_buf"] = zeros()

    # ---------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One optimizer step; `closure` (re-evaluates the loss) runs under enable_grad."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        diag_on, labels = self._begin_step()
        controller = any(g["lr_controller_mode"] != "off" for g in self.param_groups)

        pending = []  # (group, params, updates, per-tensor scales, sigmas, labels) awaiting the LR controller
        diag_alpha: list[torch.Tensor] = []
        diag_clip: list[torch.Tensor] = []
        for group, want_diag in zip(self.param_groups, diag_on):
            params = list(params_with_grad(group, _NAME))
            if not params:
                continue
            for p in params:
                self._init_state(p, self.state[p], group)
            fast = group["foreach"] is not False
            run = self._directions_foreach if fast else self._directions_reference
            if (fast and not want_diag and group["update_rule"] == "classic" and group["parameterwise"]
                    and group["lr_controller_mode"] == "off"
                    and use_compiled(group["compile"], sum(p.numel() for p in params), params[0].device)):
                run = self._directions_compiled
            updates, scales, sigmas, alphas, clipped = run(group, params, labels, want_diag)
            if want_diag:
                diag_alpha += alphas
                diag_clip += clipped
            item = (group, params, updates, scales, sigmas, [labels.get(id(p), 0) for p in params])
            if controller:
                pending.append(item)
            else:
                self._apply(*item[:4], mults=None)
        if controller:
            mults = self._controller(pending)
            for item, m in zip(pending, mults):
                self._apply(*item[:4], mults=m)
            if any(diag_on):
                self._record_multipliers(pending, mults)
        if diag_alpha:
            self._record_alpha(diag_alpha, diag_clip)
        return loss

    # Host-side bookkeeping (Python-int counters) runs outside any torch.compile'd region, so that
    # torch.compile(opt.step) does not guard on the counters and recompile every step.
    @torch.compiler.disable
    def _begin_step(self) -> tuple[list[bool], dict[int, int]]:
        """Advance the step counter (and the epoch with steps_per_epoch); (diagnostic step per group, layer labels)."""
        run = self._run
        if self._steps_per_epoch is not None:
            epoch = run["steps"] // self._steps_per_epoch + 1
            for g in self.param_groups:
                g["epoch"] = epoch
        elif not run["epoch_set"]:
            self._check_epoch_gates()
        run["steps"] += 1
        diag_on = [g["diag_every"] > 0 and (run["steps"] - 1) % g["diag_every"] == 0 for g in self.param_groups]
        need_labels = any(g["lr_controller_mode"] != "off" or (g["update_rule"] == "hybrid" and g["layer_scope"] != "all")
                          for g in self.param_groups)
        if not need_labels:
            return diag_on, {}
        self._check_layer_order()
        return diag_on, self._layer_labels()

    @staticmethod
    @torch.compiler.disable
    def _adam_corrections(states, b1: float, b2: float, dtype: torch.dtype, device: torch.device):
        """(1 - b1^t, sqrt(1 - b2^t)) per tensor as 0-d tensors, from the CPU step counters (no device sync)."""
        steps = [s["step"].item() for s in states]
        host = torch.tensor([[1.0 - b1 ** k for k in steps], [math.sqrt(1.0 - b2 ** k) for k in steps]], dtype=dtype)
        bc1, bc2s = host.to(device, non_blocking=True).unbind()
        return bc1.unbind(), bc2s.unbind()

    def _check_epoch_gates(self) -> None:
        """Warn once if a mechanism reads the epoch while nothing ever moves it."""
        gated = []
        for g in self.param_groups:
            if g["mode"] == "rule_based" and g["warmup_epochs"] > 0:
                gated.append(f"warmup_epochs={g['warmup_epochs']} (alpha = alpha_g throughout)")
            if g["update_rule"] == "hybrid" and g["phase_scope"] != "all":
                gated.append(f"phase_scope={g['phase_scope']!r}")
            if g["update_rule"] == "orthogonal_residual" and g["orthogonal_schedule"] != "constant":
                gated.append(f"orthogonal_schedule={g['orthogonal_schedule']!r}")
        if gated:
            self._warn_once("epoch", f"{_NAME}: {', '.join(dict.fromkeys(gated))} gates on the epoch, but neither "
                            "set_epoch() nor steps_per_epoch= is used, so the epoch stays 1; call "
                            "opt.set_epoch(epoch) at each epoch start or pass steps_per_epoch=len(train_loader)")

    def _apply(self, group: dict, params, updates, scales, mults) -> None:
        """p <- p (1 - lr_eff wd) [decoupled] ; p <- p - lr_eff * scale * u."""
        lr, wd = group["lr"], group["weight_decay"]
        decoupled = wd != 0.0 and (group["decoupled_weight_decay"] or
                                   (group["update_rule"] == "hybrid" and group["hybrid_base"] == "adamw"))
        if group["foreach"] is False:
            for i, (p, u) in enumerate(zip(params, updates)):
                m = 1.0 if mults is None else mults[i]
                lr_eff = lr * m
                if decoupled:
                    p.mul_(1.0 - lr_eff * wd)
                if isinstance(lr_eff, torch.Tensor):
                    p.sub_(u * lr_eff.to(u.dtype))
                else:
                    p.add_(u, alpha=-lr_eff)
            return
        # fast path: fold controller multiplier and stabiliser scale into one 0-d coefficient per tensor
        if mults is None:
            if decoupled:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            if scales is None:
                torch._foreach_add_(params, updates, alpha=-lr)
            else:
                torch._foreach_addcmul_(params, updates, torch.unbind(scales * -lr))
            return
        mvec = torch.stack([torch.as_tensor(m, dtype=torch.float64 if params[0].dtype == torch.float64 else torch.float32,
                                            device=params[0].device) for m in mults])
        if decoupled:
            torch._foreach_mul_(params, torch.unbind((1.0 - lr * wd * mvec).to(params[0].dtype)))
        coef = -lr * mvec
        if scales is not None:
            coef = coef * scales
        torch._foreach_addcmul_(params, updates, torch.unbind(coef.to(params[0].dtype)))

    # ---------------------------------------------------------------- LR controller
    @staticmethod
    def _pool_means(items) -> tuple:
        """(mean sigma over every tensor, {label: mean sigma over its tensors}) over (group, sigmas, labels)."""
        every, by_label = [], {0: [], 1: [], 2: []}
        for group, sigmas, labs in items:
            if group["lr_controller_mode"] == "off":
                continue
            for s, lab in zip(sigmas, labs):
                every.append(s)
                by_label[0 if lab == _MIDDLE else lab].append(s)
        mean_all = torch.stack(every).mean() if every else None
        return mean_all, {k: (torch.stack(v).mean() if v else None) for k, v in by_label.items()}

    def _controller(self, pending) -> list[list]:
        """Per tensor multipliers (0-d tensors or 1.0), from this step's sigmas; no host sync."""
        pooled = self._pool_means([(it[0], it[4], it[5]) for it in pending if it[0]["sensor_scope"] == "all_groups"])
        out = []
        for group, params, _, _, sigmas, labs in pending:
            mode = group["lr_controller_mode"]
            mean_all, mean_lab = pooled if group["sensor_scope"] == "all_groups" else \
                self._pool_means([(group, sigmas, labs)])
            k, lo, hi = group["lr_controller_strength"], group["lr_controller_low"], group["lr_controller_high"]
            row = []
            for lab in labs:
                if mode == "off" or (mode == "classifier_only" and lab != 2):
                    row.append(1.0)
                    continue
                s = mean_all if mode == "global" else mean_lab[0 if lab == _MIDDLE else lab]
                row.append(torch.clamp(1.0 + k * s, lo, hi))
            out.append(row)
        return out

    def _record_multipliers(self, pending, mults) -> None:
        vals, by_label = [], {0: [], 1: [], 2: []}
        for (group, params, _, _, _, labs), row in zip(pending, mults):
            for lab, m, p in zip(labs, row, params):
                t = torch.as_tensor(m, dtype=torch.float32, device=p.device).float()
                vals.append(t)
                by_label[0 if lab == _MIDDLE else lab].append(t)
        rec = {"lr_multiplier": torch.stack(vals).mean()} if vals else {}
        for lab, name in enumerate(_LAYER_NAMES):
            if by_label[lab]:
                rec[f"lr_multiplier_{name}"] = torch.stack(by_label[lab]).mean()
        self._diag.record_all(rec)

    @staticmethod
    def _sigma(alpha: torch.Tensor, alpha_g: torch.Tensor) -> torch.Tensor:
        s = torch.log(alpha.clamp_min(_LOG_FLOOR) / alpha_g.clamp_min(_LOG_FLOOR)).mean()
        return torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)

    # ---------------------------------------------------------------- reference loop
    def _directions_reference(self, group, params, labels, want_diag):
        """Ground truth: one tensor at a time, literally as the Math section reads."""
        eps, amin, amax = group["eps"], group["amin"], group["amax"]
        c = self._mix_weight(group)
        rule, wd = group["update_rule"], group["weight_decay"]
        controller = group["lr_controller_mode"] != "off"
        updates, sigmas, alphas, clipped = [], [], [], []
        for p in params:
            g, state = p.grad, self.state[p]
            state["step"] += 1
            absg = g.abs()
            G = absg / (absg.mean() + eps)
            alpha_g = (G if group["parameterwise"] else G.mean()).clamp(amin, amax)
            if group["mode"] == "rule_based":
                a, m, v = state["activity"], state["momentum"], state["variance"]
                a.lerp_(absg, 1.0 - _ACTIVITY_DECAY)
                m.lerp_(g, 1.0 - _MOMENTUM_DECAY)
                v.mul_(_VARIANCE_DECAY).addcmul_(g, g, value=1.0 - _VARIANCE_DECAY)
                act = a / (a.mean() + eps)
                ratio = m.abs() / (v.sqrt() + eps)
                mem = ratio / (ratio.mean() + eps)
                fused = group["activity_weight"] * act + group["gradient_weight"] * G + group["memory_weight"] * mem
                alpha_f = (fused if group["parameterwise"] else fused.mean()).clamp(amin, amax)
                alpha = torch.lerp(alpha_g, alpha_f, c)
            else:
                alpha = alpha_g
            if controller:
                sigmas.append(self._sigma(alpha, alpha_g) if group["mode"] == "rule_based"
                              else torch.zeros((), dtype=g.dtype, device=g.device))
            if want_diag:
                alphas.append(alpha.expand_as(g).reshape(-1))

            if rule == "classic":
                u = alpha * g
            elif rule == "bounded_residual":
                r = (alpha - 1.0) * g
                limit = group["residual_max_ratio"] * g.norm()
                rn = r.norm()
                if rn > limit:
                    r = r * (limit / (rn + group["clip_eps"]))
                u = g + r
            elif rule == "orthogonal_residual":
                gg = (g * g).sum()
                q = (alpha - alpha_g) * g
                q = q - (q * g).sum() / (gg + eps) * g
                if gg <= eps:  # the seed skips the term for a (near-)zero gradient
                    q = torch.zeros_like(g)
                if group["match_grad_norm"] and q.norm() > eps:
                    q = q * (g.norm() / (q.norm() + eps))
                q = q * (group["orthogonal_lambda"] * self._orthogonal_gate(group))
                limit = group["orthogonal_max_ratio"] * g.norm()
                qn = q.norm()
                if qn > limit:
                    q = q * (limit / (qn + eps))
                u = g + q
            else:
                base, m_ref = self._hybrid_base_reference(p, g, state, group)
                s = alpha - 1.0
                target = group["hybrid_target"]
                if target == "gain":
                    delta = s * base
                elif target == "momentum":
                    delta = s * m_ref
                else:
                    tr = (p.norm() / (base.norm() + group["clip_eps"])).clamp(0.5, 1.5) - 1.0
                    delta = s * tr * base
                delta = delta * (group["modulation_strength"] * self._phase_gate(group)
                                 * self._layer_gate(group, labels.get(id(p), 0)))
                limit = group["modulation_max_ratio"] * base.norm()
                dn = delta.norm()
                if dn > limit:
                    delta = delta * (limit / (dn + group["clip_eps"]))
                u = base + delta
            if wd != 0.0 and rule != "hybrid" and not group["decoupled_weight_decay"]:
                u = u + wd * p

            norm = u.norm()
            if want_diag:
                clipped.append((norm > group["max_update_norm"]).float())
            if norm > group["max_update_norm"]:
                u = u * (group["max_update_norm"] / (norm + eps))
            if group["adaptation_rate"] != 0.0:
                rms = torch.sqrt(torch.mean(u.pow(2)) + eps)
                gain = (1.0 + group["adaptation_rate"] * (group["target_rms"] - rms)).clamp(0.5, 1.5)
                u = u * gain
            updates.append(u)
        return updates, None, sigmas, alphas, clipped

    @staticmethod
    def _layer_gate(group: dict, label: int) -> float:
        scope = group["layer_scope"]
        if scope == "all":
            return 1.0
        if label == _MIDDLE:  # in both body scopes, as the seed's ceil/floor split
            return float(scope in ("early_blocks", "late_blocks"))
        return float(_LAYER_NAMES[label] == scope)

    @staticmethod
    def _hybrid_base_reference(p, g, state, group):
        if group["hybrid_base"] == "adamw":
            b1, b2 = group["base_betas"]
            step = state["step"].item()  # a CPU tensor, as torch keeps it: no device sync
            bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
            m, v = state["base_exp_avg"], state["base_exp_avg_sq"]
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
            return (m / bc1) / denom, m / bc1
        buf = state["base_buf"]
        d = g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] != 0.0 else g
        buf.mul_(group["base_momentum"]).add_(d)
        return buf, buf

    # ---------------------------------------------------------------- fast path
    def _directions_foreach(self, group, params, labels, want_diag):
        """The same math with torch._foreach_* ops and per-tensor statistics kept as device tensors."""
        eps, amin, amax = group["eps"], group["amin"], group["amax"]
        c = self._mix_weight(group)
        rule, wd = group["update_rule"], group["weight_decay"]
        controller = group["lr_controller_mode"] != "off"
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        dev, dt = grads[0].device, grads[0].dtype
        numel = torch.tensor([float(g.numel()) for g in grads], dtype=torch.float64 if dt == torch.float64 else torch.float32,
                             device=dev)
        torch._foreach_add_([s["step"] for s in states], 1.0)

        def means(xs):  # per-tensor mean of non-negative tensors, as one [T] vector
            return torch.stack(torch._foreach_norm(xs, 1)).to(numel.dtype) / numel

        absg = torch._foreach_abs(grads)
        dg = means(absg) + eps  # mean|g| + eps, [T]
        pw = group["parameterwise"]
        if group["mode"] == "rule_based":
            acts = [s["activity"] for s in states]
            moms = [s["momentum"] for s in states]
            vars_ = [s["variance"] for s in states]
            torch._foreach_lerp_(acts, absg, 1.0 - _ACTIVITY_DECAY)
            torch._foreach_lerp_(moms, grads, 1.0 - _MOMENTUM_DECAY)
            torch._foreach_mul_(vars_, _VARIANCE_DECAY)
            torch._foreach_addcmul_(vars_, grads, grads, 1.0 - _VARIANCE_DECAY)
            da = means(acts) + eps
            den = torch._foreach_sqrt(vars_)
            torch._foreach_add_(den, eps)
            fused = torch._foreach_abs(moms)
            torch._foreach_div_(fused, den)
            del den
            dm = means(fused) + eps
            # fused <- w_m Mem + w_a Act + w_g G, reusing the memory buffer
            cast = lambda v: torch.unbind(v.to(dt))  # noqa: E731
            torch._foreach_mul_(fused, cast(group["memory_weight"] / dm))
            torch._foreach_addcmul_(fused, acts, cast(group["activity_weight"] / da))
            torch._foreach_addcmul_(fused, absg, cast(group["gradient_weight"] / dg))
        torch._foreach_div_(absg, torch.unbind(dg.to(dt)))  # absg is now G
        alpha_g = absg
        if not pw:
            alpha_g = [x.mean() for x in alpha_g]
        torch._foreach_clamp_min_(alpha_g, amin)
        torch._foreach_clamp_max_(alpha_g, amax)
        if group["mode"] == "rule_based":
            alpha_f = fused if pw else [x.mean() for x in fused]
            torch._foreach_clamp_min_(alpha_f, amin)
            torch._foreach_clamp_max_(alpha_f, amax)
            keep_g = controller or rule == "orthogonal_residual"
            if keep_g:
                alpha = torch._foreach_lerp(alpha_g, alpha_f, c)
            else:
                torch._foreach_lerp_(alpha_g, alpha_f, c)
                alpha = alpha_g
            del alpha_f, fused
        else:
            alpha = alpha_g
        sigmas = []
        if controller:
            if group["mode"] == "rule_based":
                sigmas = [self._sigma(a, b) for a, b in zip(alpha, alpha_g)]
            else:
                sigmas = [torch.zeros((), dtype=dt, device=dev) for _ in params]
        alphas = [a.expand_as(g).reshape(-1).clone() for a, g in zip(alpha, grads)] if want_diag else []
        if not pw:
            alpha = [a.expand_as(g) for a, g in zip(alpha, grads)]

        if rule == "classic":
            if pw:  # alpha is a buffer this step owns (G or the lerp result): reuse it for u
                torch._foreach_mul_(alpha, grads)
                u = alpha
            else:
                u = torch._foreach_mul(alpha, grads)
        elif rule == "bounded_residual":
            r = torch._foreach_sub(alpha, 1.0)
            torch._foreach_mul_(r, grads)
            limit = group["residual_max_ratio"] * torch.stack(torch._foreach_norm(grads))
            torch._foreach_mul_(r, cast_list(self._excess(r, limit, group["clip_eps"]), dt))
            u = torch._foreach_add(grads, r)
        elif rule == "orthogonal_residual":
            q = torch._foreach_sub(alpha, alpha_g)
            torch._foreach_mul_(q, grads)
            qg = torch.stack([torch.dot(a.reshape(-1), b.reshape(-1)) for a, b in zip(q, grads)])
            gg = torch.stack([torch.dot(b.reshape(-1), b.reshape(-1)) for b in grads])
            gn = torch.stack(torch._foreach_norm(grads))
            coef = qg / (gg + eps)
            torch._foreach_sub_(q, torch._foreach_mul(grads, cast_list(coef, dt)))
            # the seed's small-gradient skip (||g||^2 <= eps: no term) folded into the per-tensor scale
            lam = torch.full_like(gn, group["orthogonal_lambda"] * self._orthogonal_gate(group))
            scale = torch.where(gg.to(gn.dtype) > eps, lam, torch.zeros_like(lam))
            if group["match_grad_norm"]:
                qn = torch.stack(torch._foreach_norm(q)).to(gn.dtype)
                scale = torch.where(qn > eps, gn / (qn + eps), torch.ones_like(qn)) * scale
            torch._foreach_mul_(q, cast_list(scale, dt))
            limit = group["orthogonal_max_ratio"] * gn
            torch._foreach_mul_(q, cast_list(self._excess(q, limit, eps), dt))
            u = torch._foreach_add(grads, q)
        else:
            u = self._hybrid_foreach(group, params, grads, states, alpha, labels, eps, dt)
        if wd != 0.0 and rule != "hybrid" and not group["decoupled_weight_decay"]:
            torch._foreach_add_(u, params, alpha=wd)

        # homeostatic stabiliser as one per-tensor scale, folded into the final step
        norms = torch.stack(torch._foreach_norm(u))
        mx = group["max_update_norm"]
        over = norms > mx
        scale = torch.where(over, mx / (norms + eps), torch.ones_like(norms))
        if group["adaptation_rate"] != 0.0:
            rms = torch.sqrt((norms * scale) ** 2 / numel.to(norms.dtype) + eps)
            scale = scale * (1.0 + group["adaptation_rate"] * (group["target_rms"] - rms)).clamp(0.5, 1.5)
        clipped = list(over.float().unbind()) if want_diag else []
        return u, scale, sigmas, alphas, clipped

    @torch.compiler.disable
    def _scratch(self, key: int, grads, idx) -> list[torch.Tensor]:
        """Flat buffers for the compiled path's u of grads[i], i in idx, kept across steps (one set per group, `key`
        = id of its first parameter) and not copied with the optimizer; new ones when sizes or dtypes change."""
        cache = self.__dict__.setdefault("_scratch_bufs", {})
        if not idx:
            return []
        want = [(grads[i].numel(), grads[i].dtype, grads[i].device) for i in idx]
        bufs = cache.get(key)
        if bufs is None or [(b.numel(), b.dtype, b.device) for b in bufs] != want:
            bufs = cache[key] = [torch.empty(n, dtype=dt, device=dev) for n, dt, dev in want]
        return bufs

    def _directions_compiled(self, group, params, labels, want_diag):
        """Classic rule, parameterwise, no controller, no diagnostics: two fused kernels per tensor; tensors under
        `optim._flat.SMALL_NUMEL` elements gathered into flat buffers, through the same arithmetic once."""
        eps, amin, amax, wd = group["eps"], group["amin"], group["amax"], group["weight_decay"]
        c = self._mix_weight(group)
        coupled_wd = wd if not group["decoupled_weight_decay"] else 0.0
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        dev, dt = grads[0].device, grads[0].dtype
        sdt = torch.float64 if dt == torch.float64 else torch.float32
        numel = torch.tensor([float(g.numel()) for g in grads], dtype=sdt, device=dev)
        torch._foreach_add_([s["step"] for s in states], 1.0)

        flat = alias_1d  # not x.view(-1): see optim._flat
        # Tensors below optim._flat.SMALL_NUMEL elements: gathered, through one compiled call per kernel.
        big, buckets = partition(grads)
        n_t = len(grads)
        keys = ("activity", "momentum", "variance")

        def wd_p(i):  # the parameter where the update reads it (coupled weight decay), else None
            return flat(params[i]) if coupled_wd != 0.0 else None

        if group["mode"] == "rule_based":
            sums = torch.empty(n_t, 3, dtype=sdt, device=dev)
            if big:
                traces = compiled(_traces_kernel)
                sums[big] = torch.stack([traces(flat(grads[i]), *[flat(states[i][k]) for k in keys], eps).to(sdt)
                                         for i in big])
                bump_versions([states[i][k] for i in big for k in keys])
            gathered = []
            for idx, bucket in buckets:
                ops = [bucket.gather([grads[i] for i in idx])] + [bucket.gather([states[i][k] for i in idx])
                                                                 for k in keys]
                sums[idx] = bucket.sums(compiled(_trace_terms_kernel)(*ops, eps)).T.to(sdt)
                for k, x in zip(keys, ops[1:]):
                    bucket.scatter(x, [states[i][k] for i in idx])
                gathered.append(ops)
            dg, da, dm = (sums / numel[:, None] + eps).unbind(1)
            one = torch.ones_like(dg)
            ks = torch.stack([1 / dg, group["activity_weight"] / da, group["gradient_weight"] / dg,
                              group["memory_weight"] / dm, amin * one, amax * one, c * one, coupled_wd * one,
                              eps * one], dim=1).to(dt)
            kern, terms = compiled(_classic_kernel), compiled(_classic_terms_kernel)
            bufs = self._scratch(id(params[0]), grads, big)
            big_sq = [kern(b, wd_p(i), flat(grads[i]), *[flat(states[i][k]) for k in keys], ks[i].clone())
                      for i, b in zip(big, bufs)]
        else:
            dg = torch.stack([g.abs().sum().to(sdt) for g in grads]) / numel + eps
            one = torch.ones_like(dg)
            ks = torch.stack([1 / dg, amin * one, amax * one, coupled_wd * one], dim=1).to(dt)
            kern, terms = compiled(_gradonly_kernel), compiled(_gradonly_terms_kernel)
            bufs = self._scratch(id(params[0]), grads, big)
            big_sq = [kern(b, wd_p(i), flat(grads[i]), ks[i].clone()) for i, b in zip(big, bufs)]
            gathered = [[bucket.gather([grads[i] for i in idx])] for idx, bucket in buckets]
        u: list = [None] * n_t
        sq = torch.empty(n_t, dtype=sdt, device=dev)
        for i, b in zip(big, bufs if big else []):
            u[i] = b.view(grads[i].shape)
        if big:
            bump_versions(bufs)
            sq[big] = torch.stack([s2.to(sdt) for s2 in big_sq])
        for (idx, bucket), ops in zip(buckets, gathered):
            p_flat = bucket.gather([params[i] for i in idx]) if coupled_wd != 0.0 else None
            u_flat, u_sq = terms(p_flat, *ops, bucket.expand(ks[idx].T.contiguous()))
            sq[idx] = bucket.sums(u_sq[None])[0].to(sdt)
            for i, x in zip(idx, bucket.split(u_flat, [grads[i] for i in idx])):
                u[i] = x
        norms = sq.sqrt()
        mx = group["max_update_norm"]
        over = norms > mx
        scale = torch.where(over, mx / (norms + eps), torch.ones_like(norms))
        if group["adaptation_rate"] != 0.0:
            rms = torch.sqrt((norms * scale) ** 2 / numel + eps)
            scale = scale * (1.0 + group["adaptation_rate"] * (group["target_rms"] - rms)).clamp(0.5, 1.5)
        return u, scale.to(dt), [], [], []

    @staticmethod
    def _excess(xs, limit: torch.Tensor, eps: float) -> torch.Tensor:
        """Per-tensor factor that rescales ||x|| down to `limit` where it exceeds it (else 1)."""
        n = torch.stack(torch._foreach_norm(xs)).to(limit.dtype)
        return torch.where(n > limit, limit / (n + eps), torch.ones_like(n))

    def _hybrid_foreach(self, group, params, grads, states, alpha, labels, eps, dt):
        if group["hybrid_base"] == "adamw":
            b1, b2 = group["base_betas"]
            bc1, bc2s = self._adam_corrections(states, b1, b2, dt, grads[0].device)
            ms = [s["base_exp_avg"] for s in states]
            vs = [s["base_exp_avg_sq"] for s in states]
            torch._foreach_lerp_(ms, grads, 1.0 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, 1.0 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, bc2s)
            torch._foreach_add_(denom, eps)
            m_ref = torch._foreach_div(ms, bc1)
            base = torch._foreach_div(m_ref, denom)
            del denom
        else:
            bufs = [s["base_buf"] for s in states]
            torch._foreach_mul_(bufs, group["base_momentum"])
            torch._foreach_add_(bufs, grads)
            if group["weight_decay"] != 0.0:
                torch._foreach_add_(bufs, params, alpha=group["weight_decay"])
            base = m_ref = bufs
        s = torch._foreach_sub(alpha, 1.0)
        target = group["hybrid_target"]
        bn = torch.stack(torch._foreach_norm(base))
        strength = group["modulation_strength"] * self._phase_gate(group)
        gates = torch.tensor([strength * self._layer_gate(group, labels.get(id(p), 0)) for p in params],
                             dtype=bn.dtype, device=bn.device)
        if target == "gain":
            delta = torch._foreach_mul(s, base)
        elif target == "momentum":
            delta = torch._foreach_mul(s, m_ref)
        else:
            pn = torch.stack(torch._foreach_norm(params)).to(bn.dtype)
            gates = gates * ((pn / (bn + group["clip_eps"])).clamp(0.5, 1.5) - 1.0)
            delta = torch._foreach_mul(s, base)
        torch._foreach_mul_(delta, cast_list(gates, dt))
        torch._foreach_mul_(delta, cast_list(self._excess(delta, group["modulation_max_ratio"] * bn,
                                                           group["clip_eps"]), dt))
        # u = base + delta must not alias the SGD buffer (it is state)
        return torch._foreach_add(base, delta)

    # ---------------------------------------------------------------- diagnostics
    def _record_alpha(self, alphas: list[torch.Tensor], clipped: list[torch.Tensor]) -> None:
        """Coefficient statistics on the device; read back only by diagnostics()."""
        a = torch.cat([x.float() for x in alphas])
        amin = self.param_groups[0]["amin"]
        amax = self.param_groups[0]["amax"]
        rec = {"alpha_min": a.min(), "alpha_max": a.max(), "alpha_mean": a.mean(),
               "alpha_frac_negative": (a < 0).float().mean(),
               "alpha_frac_outside": ((a < amin) | (a > amax)).float().mean()}
        # torch.quantile caps its input size: a fixed stride subsample keeps it bounded
        stride = max(1, a.numel() // 1_000_000)
        q = torch.quantile(a[::stride], torch.tensor([0.01, 0.5, 0.99], device=a.device))
        rec.update(alpha_q01=q[0], alpha_q50=q[1], alpha_q99=q[2])
        if clipped:
            rec["update_clip_frac"] = torch.stack([c.reshape(()) for c in clipped]).mean()
        self._diag.record_all(rec)

    def diagnostics(self) -> dict[str, float]:
        """Coefficient statistics (alpha_min/max/mean/q01/q50/q99/frac_negative/frac_outside), stabiliser
        clip fraction and LR-controller multipliers from the last diagnostic step (`<key>_mean`: the mean
        over diagnostic steps since the previous call). One host sync; {} if no diagnostic step ran since."""
        # _base.Diagnostics.read() fails on keys it has already reset; nothing new means nothing to report
        if not self._diag.pending():
            return {}
        return self._diag.read()


def cast_list(v: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return torch.unbind(v.to(dtype))


def _sgd_kwargs(momentum: float | None) -> Callable[[dict], dict]:
    def to_baseline(hp: dict) -> dict:
        return {"lr": hp["lr"], "weight_decay": hp["weight_decay"],
                "momentum": hp.get("base_momentum", 0.9) if momentum is None else momentum}
    return to_baseline


def _adamw_kwargs(hp: dict) -> dict:
    return {"lr": hp["lr"], "weight_decay": hp["weight_decay"], "betas": tuple(hp["base_betas"]), "eps": hp["eps"]}


_SEED_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "eps": 1e-8, "base_betas": (0.9, 0.999), "base_momentum": 0.9}
_STABILISER_OFF = {"max_update_norm": math.inf, "adaptation_rate": 0.0}
_ALPHA_ONE = {"amin": 1.0, "amax": 1.0}

ENTRIES: list[Entry] = [
    Entry("neuroplastic", NeuroPlastic, dict(_SEED_DEFAULTS), "sgd",
          mechanisms_off={**_ALPHA_ONE, **_STABILISER_OFF}, to_baseline=_sgd_kwargs(0.0),
          summary="NeuroPlastic classic path: per-element plasticity coefficient times the gradient, norm-clipped"),
    Entry("neuroplastic_gradonly", NeuroPlastic,
          {**_SEED_DEFAULTS, "mode": "ablation_grad_only", "amin": 0.5, "amax": 1.5}, "sgd",
          mechanisms_off={**_ALPHA_ONE, **_STABILISER_OFF}, to_baseline=_sgd_kwargs(0.0),
          summary="NeuroPlastic's controlled gradient-only ablation: clip(|g|/mean|g|, 0.5, 1.5) g, norm-clipped"),
    Entry("neuroplastic_lrctl", NeuroPlastic, {**_SEED_DEFAULTS, "lr_controller_mode": "global"}, "sgd",
          mechanisms_off={**_ALPHA_ONE, **_STABILISER_OFF, "lr_controller_strength": 0.0},
          to_baseline=_sgd_kwargs(0.0),
          summary="NeuroPlastic with the LR controller (lr x clip(1 + 0.1 mean log(alpha/alpha_g), 0.8, 1.2))"),
    Entry("neuroplastic_residual", NeuroPlastic, {**_SEED_DEFAULTS, "update_rule": "bounded_residual"}, "sgd",
          mechanisms_off={**_STABILISER_OFF, "residual_max_ratio": 0.0}, to_baseline=_sgd_kwargs(0.0),
          summary="NeuroPlastic bounded residual: g + (alpha - 1) g clipped to 0.5 ||g||"),
    Entry("neuroplastic_orthogonal", NeuroPlastic, {**_SEED_DEFAULTS, "update_rule": "orthogonal_residual"}, "sgd",
          mechanisms_off={**_STABILISER_OFF, "orthogonal_lambda": 0.0}, to_baseline=_sgd_kwargs(0.0),
          summary="NeuroPlastic orthogonal residual: g + 0.1 x the part of (alpha - alpha_g) g orthogonal to g"),
    Entry("neuroplastic_hybrid_adamw", NeuroPlastic,
          {**_SEED_DEFAULTS, "update_rule": "hybrid", "hybrid_base": "adamw"}, "adamw",
          mechanisms_off={**_STABILISER_OFF, "modulation_strength": 0.0}, to_baseline=_adamw_kwargs,
          summary="NeuroPlastic hybrid: AdamW direction + 0.15 (alpha - 1) x it, then the unit-norm stabiliser"),
    Entry("neuroplastic_hybrid_sgd", NeuroPlastic,
          {**_SEED_DEFAULTS, "update_rule": "hybrid", "hybrid_base": "sgd_momentum"}, "sgd",
          mechanisms_off={**_STABILISER_OFF, "modulation_strength": 0.0}, to_baseline=_sgd_kwargs(None),
          summary="NeuroPlastic hybrid: heavy-ball SGD direction + 0.15 (alpha - 1) x it, then the stabiliser"),
]
