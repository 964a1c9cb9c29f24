"""EnhancedSGD (GradRetentionNet): heavy-ball SGD with gradient centering, variance-based clipping,
gradient noise and an epsilon-greedy Q-learning controller of the learning rate and momentum."""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any, Callable

import torch

from ._base import BioOptimizer, check_hp, check_not_sparse, compiled, use_compiled
from ._flat import alias_1d, bump_versions, histc_counts, partition
from .registry import Entry

_NAME = "EnhancedSGD"
_MULT = (0.95, 1.0, 1.05)
_ADD = (-0.005, 0.0, 0.005)
_SCALARS = ("lr_scale", "momentum_scale", "grad_scale")
_BINS = 100

# Diagnostic codes of one controller scalar's action: random multiplicative 0..2 / additive 3..5
# (index into the action set), greedy "1 + Q[mult]" 6, greedy "Q[add]" 7.
_GREEDY_MULT, _GREEDY_ADD = 6, 7


def histogram_entropy(flat: torch.Tensor | list[torch.Tensor], sync_free: bool | None = None,
                      fast_counts: bool = True, bounds: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """The seed's gradient "entropy": -sum(h log h) over a 100-bin density histogram (+1e-12).

    `flat` is one 1-D tensor or a list of them (their concatenation, without making it).
    `fast_counts=False` keeps `torch.histc` on CPU whatever the size (the reference loop's ground truth).
    `bounds`: (min, max) of all elements as 0-d tensors when the caller has them (not recomputed).

    Densities are count / (N * bin width) over [min, max] (numpy's `density=True`; a constant
    input gets numpy's range [x - 0.5, x + 0.5]); no bin-width factor in the sum, as in the seed.
    Computed on the tensor's device and returned as a 0-d tensor. On CPU `torch.histc` is used
    (its bounds are host floats, which costs nothing there), or for >= 2^20 elements the same counts
    from a compiled bin-index pass and `torch.bincount` (optim._flat.histc_counts, ~4x faster); elsewhere
    the bins are filled with an accumulating `index_put_` so that nothing waits on the host.
    """
    parts = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    n = sum(x.numel() for x in parts)
    if bounds is not None:
        lo, hi = bounds
    elif len(parts) == 1:
        lo, hi = torch.aminmax(parts[0])
    else:
        ranges = torch.stack([torch.stack(torch.aminmax(x)) for x in parts])
        lo, hi = ranges[:, 0].min(), ranges[:, 1].max()
    flat_range = hi == lo
    lo = torch.where(flat_range, lo - 0.5, lo)
    hi = torch.where(flat_range, hi + 0.5, hi)
    dtype, device = parts[0].dtype, parts[0].device
    if sync_free is None:
        sync_free = device.type != "cpu"
    counts = torch.zeros(_BINS, dtype=dtype, device=device)
    if sync_free:
        for x in parts:
            idx = ((x - lo) * (_BINS / (hi - lo))).floor_().clamp_(0, _BINS - 1).long()
            counts.index_put_((idx,), torch.ones((), dtype=dtype, device=device), accumulate=True)
    else:
        fast = histc_counts(parts, lo, hi, _BINS) if fast_counts else None  # same counts, ~4x faster
        if fast is not None:
            counts = fast
        else:
            lo_f, hi_f = float(lo), float(hi)
            for x in parts:
                counts += torch.histc(x, _BINS, lo_f, hi_f)
    h = counts / (n * (hi - lo) / _BINS) + 1e-12
    return -(h * h.log()).sum()


def _stats_kernel(g):
    """[sum, sum of squares, min, max] of one (1-D) gradient, in one pass over it."""
    return torch.stack([g.sum(), (g * g).sum(), g.amin(), g.amax()])


def _processed(p, g, n, c, noise: bool, wd: bool):
    """The processed gradient, ops in the reference loop's order. `c` is [8] (one tensor) or [8, n] (per element):
    mean (0 = no centering), -clip, clip (+-inf = no clipping), noise_scale, grad scale (1 = none), weight_decay,
    momentum, -lr; `noise` / `wd` say whether the noise / weight-decay terms exist."""
    x = torch.clamp(g - c[0], c[1], c[2])
    if noise:
        x = x + c[3] * n
    x = x * c[4]
    if wd:
        x = x + c[5] * p
    return x


def _apply_kernel(p, g, n, buf, c, noise: bool, wd: bool) -> None:
    """One pass: processed gradient, buf <- mu buf + x, p <- p - lr buf (in place)."""
    buf.mul_(c[6]).add_(_processed(p, g, n, c, noise, wd))
    p.add_(buf * c[7])


def _apply_out_kernel(p, g, n, buf, c, noise: bool, wd: bool):
    """`_apply_kernel` that also returns the processed gradient (for the retention deque)."""
    x = _processed(p, g, n, c, noise, wd)
    buf.mul_(c[6]).add_(x)
    p.add_(buf * c[7])
    return x


def _on_device(values: list[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host floats as a 1-D tensor on `device` without a host sync: `torch.tensor(..., device=cuda)` copies from
    pageable memory and waits for the stream; fills are queued like any kernel."""
    if device.type == "cpu":
        return torch.tensor(values, dtype=dtype)
    out = torch.empty(len(values), dtype=dtype, device=device)
    for i, v in enumerate(values):
        out[i].fill_(v)
    return out


@torch.compiler.disable
def _tensor_stats(gs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([T, 2] per-tensor [sum, sum of squares], min, max of all elements) of T same-dtype contiguous gradients:
    one compiled pass per tensor of >= optim._flat.SMALL_NUMEL elements, the smaller ones gathered into one."""
    big, buckets = partition(gs)
    dt, dev = gs[0].dtype, gs[0].device
    rows = torch.empty(len(gs), 2, dtype=dt, device=dev)
    ranges = []
    if big:
        k = torch.stack([compiled(_stats_kernel)(alias_1d(gs[i])) for i in big])
        rows[big] = k[:, :2]
        ranges.append(k[:, 2:])
    for idx, bucket in buckets:
        flat = bucket.gather([gs[i] for i in idx])
        rows[idx] = bucket.sums(torch.stack([flat, flat * flat])).T
        ranges.append(torch.stack(torch.aminmax(flat)).unsqueeze(0))
    ranges = torch.cat(ranges)
    return rows, ranges[:, 0].min(), ranges[:, 1].max()


class EnhancedSGD(BioOptimizer):
    """Heavy-ball SGD + per-tensor gradient centering + variance-based clipping + N(0, s^2) gradient
    noise, with an epsilon-greedy Q-learning controller of lr and momentum when a closure is given.

    Seed:
        waefrebeorn/GradRetentionNet @ bba81ed, `EnhancedSGD.py` (driver `main.py @ d87c684`);
        spec: seeds-spec.md section 2. The repo's experiments never pass a closure, so they ran
        Path A only; Path B (the README's Q-learning idea) is implemented as written.

    Math:
        Per step t, over the gradients of every group (g_all = all gradients concatenated):
            V_t      = Var(g_all)  (unbiased)
            sigma2  <- a V_t + (1 - a) sigma2                   a = smoothing_factor, sigma2_0 = 0
            if |sigma2 - sigma2_prev| > 0.9: sigma2 <- 0.9 sigma2_prev + 0.1 sigma2   ("stabilisation")
            H_t      = -sum_b (h_b + 1e-12) log(h_b + 1e-12), h = 100-bin histogram densities of g_all
            c        = min(max(2 sqrt(sigma2), 0.5), 10) if sigma2 > 0 else +inf
        Per parameter tensor p with gradient g (mu = group momentum, lr = group lr):
            g <- g - mean(g)                      (gradient_centering; a 1-element g becomes 0)
            g <- clamp(g, -c, c)                  (gradient_clipping)
            g <- g + noise_scale * n,  n ~ N(0, 1) (apply_noise; dedicated generator)
            retention: if H_t > 0.5 push g into a bounded deque (never read by the update)
            b <- mu b + g;  p <- p - lr b         (heavy-ball, no dampening, no Nesterov)
        Path A = the above with the group's lr and momentum (no closure, or controller=False).
        Path B (closure given and controller=True), before the parameter update, with the loss L:
            spike: if L > 1.5 mean(last 100 losses): lr_eff <- 0.5 lr_eff, mu <- 0.9 mu
            state s = (round(L, 2), round(sigma2, 2), round(H_t, 2), epoch, 1)
            action: with prob eps random (prob mix_prob: each scalar x in {lr_scale, momentum_scale,
                grad_scale} gets a factor from {0.95, 1, 1.05}, else a delta from {-0.005, 0, 0.005}),
                else greedy per scalar: 1 + Q[s][x_mult] if Q[s][x_mult] >= Q[s][x_add] else Q[s][x_add];
                eps <- max(eps_min, eps_decay eps)
            apply: a value in {0.95, 1.0, 1.05} multiplies x, any other value is added to x
            d = max(0.5, 1 - epoch / 20);  lr_eff = lr * min(max(lr_scale, 0.5), 1.5 d), written back
            to the group's lr; if adaptive_momentum: mu <- min(max(mu momentum_scale, 0.85), 0.99 d)
            after the update: r = -(|sigma2 - sigma2_prev| + entropy_weight |H_t - H_{t-1}|),
            s' = s, and for each scalar's key k: Q[s][k] += q_alpha (r + q_gamma max Q[s'] - Q[s][k]);
            sigma2_prev <- sigma2.

    Deviations from the seed:
        - Each group keeps its own lr and momentum (the seed copies group 0's lr and the single
          controller momentum into every group); with one group, as in every seed run, identical.
        - Noise and exploration draws come from dedicated generators saved in `state_dict()`, not
          from the global torch / Python RNGs; all controller state (Q-table, epsilon, sigma2,
          sigma2_prev, last entropies, loss history, controller scalars, epoch) lives in
          `self.state["controller"]`, so a resumed run is bit-identical (the seed's string keys in
          `self.state` break `state_dict()`).
        - The histogram is computed on the gradients' device (seed: numpy on the host).
        - Zero-element parameters are skipped (no momentum buffer; the seed's `aminmax` fails on them).
        - `steps_per_epoch` (not in the seed) derives the controller's epoch from the step count.
        - The seed's unused `slow_weights` (Lookahead, 1 P), `decay`, `usage_case`, `max_steps`,
          `layer_type_scaling`, `grad_cam_scaling` and the never-called Bayesian initialisation and
          `update_mix_prob` are left out; the unbounded grad-variance / entropy / lr history lists
          are not kept (the last values are in `diagnostics()`).
        - Retention (never read): in Path B the gradient is cloned into the deque when H_t > 0.5, as
          in the seed; in Path A the decision is not brought to the host, so the deque holds
          (H_t > 0.5 flag, gradient) pairs and `retained_gradients()` filters them (where H_t is on the
          CPU, reading it costs no device sync, and a step with H_t <= 0.5 adds (False, None) pairs: the
          same deque as seen through `retained_gradients()`). The deque is not
          part of `state_dict()` since no update reads it.
        - Seed bugs, kept by default, each with a flag that fixes it:
          `fix_lr_compounding`: lr_eff = group lr * adjustment without writing it back (seed: the
              written-back lr_eff is next step's base, so the lr compounds multiplicatively);
          `fix_action_typing`: an action keeps the type it was chosen as (seed: a greedy value like
              1 + Q = 0.9997 is outside {0.95, 1, 1.05}, so it is ADDED and lr_scale jumps by ~1;
              the Q key is picked by the same membership test);
          `fix_next_state`: Q(s_t, a_t) is updated at step t+1 with max Q(s_{t+1}) (seed: s' = s);
          `fix_momentum_window`: mu is clamped to [0.85, 0.99] (seed: for epoch >= 3 the upper
              bound 0.99 d falls below 0.85 and mu is forced to 0.99 d, 0.495 by epoch 10);
          `fix_spike_correction`: the spike halving is applied to the group lr and persists (seed:
              lr_eff is halved, then overwritten by base_lr * adjustment in the same step, so a
              loss spike only damps the momentum);
          `use_grad_scale`: multiply the processed gradient by clamp(grad_scale, 0.5, 1.5) (our
              choice of range; seed: grad_scale is adapted but never used);
          `apply_weight_decay`: add weight_decay * p to the processed gradient before momentum, as
              torch SGD does (seed: weight_decay = 0.01 is stored in the defaults, never applied).

    Warnings:
        - Path B needs the loss, sigma2 and H_t as Python floats for the Q-table state: one host
          sync per step (the seed's design). Path A has no host sync on accelerators.
        - The Q-state contains the loss rounded to 0.01, so states almost never repeat and the
          table grows by ~1 entry (6 floats) per step; `state_dict()` grows with it.
        - The entropy uses densities without the bin width, so its scale depends on the gradient
          range; for real gradients it is hugely negative and retention never triggers. The clip
          floor 0.5 makes clipping inert for typical gradients.
        - Centering zeroes the gradient of every 1-element tensor (e.g. a scalar bias / gain).
        - The controller (Path B) runs only when `step()` gets a closure; without one the optimizer is
          Path A and the first step() warns once (controller=False, the registry's
          `enhanced_sgd_noclosure`, is Path A without the warning). Closures are passed by optirep's
          `train` (registry `needs_closure`) and by PyTorch Lightning's automatic optimisation; the Hugging
          Face Trainer and plain `loss.backward(); opt.step()` loops do not, and `GradScaler.step` refuses
          a closure (fp16 AMP).
        - The controller reads the epoch (Q-state, decay d): call `set_epoch(epoch)` each epoch (optirep's
          `train` does) or pass `steps_per_epoch`; the first controller step warns once if neither is used.
        - With `grad_retention=True`, Path A keeps references to up to `gradient_buffer_size`
          processed gradient tensors alive (about 1.6 P on ResNet-18); the seed's deque stays empty
          in practice, so set `grad_retention=False` for memory measurements (where H_t is on the CPU,
          a step with H_t <= 0.5 keeps none). It never changes an update.
        - The reference loop's statistics need one concatenated copy of all gradients (1 P transient) per
          step; the foreach and compiled paths work per tensor (no copy).
        - Step cost (`benchmarks/optim_step.py`, `benchmarks/esgd_breakdown.py`): the N(0, 1) draw of one
          number per parameter from the CPU generator's Mersenne Twister stream is about half of a
          compiled-path step on CPU (torch's `normal_` into kept buffers: ~7x torch's fused SGD step on its
          own), the 100-bin histogram about a tenth.

    Args:
        params: parameters or param groups.
        lr (0.01): learning rate.
        momentum (0.9): heavy-ball momentum mu (the controller's starting value in Path B).
        weight_decay (0.01): stored as in the seed; only applied with `apply_weight_decay=True`.
        smoothing_factor (0.1): weight of the new variance in the sigma2 EMA.
        gradient_centering (True), gradient_clipping (True), apply_noise (True): the mechanisms.
        noise_scale (1e-4): standard deviation of the gradient noise.
        controller (True): run Path B when `step()` gets a closure; False = Path A always.
        adaptive_momentum (True): the controller adapts mu.
        entropy_weight (0.1): weight of |dH| in the reward.
        loss_correction_factor (0.5): lr factor on a loss spike.
        spike_threshold (1.5): a loss above this times the mean of the last 100 is a spike.
        stabilizing_factor (0.9): threshold and weight of the sigma2 "stabilisation".
        q_alpha (0.1), q_gamma (0.9): Q-learning rate and discount.
        q_epsilon (0.5), q_epsilon_decay (0.995), q_epsilon_min (0.01): exploration schedule.
        q_mix_prob (0.8): probability that a random action is multiplicative.
        grad_retention (True): keep the (never read) retention deque.
        gradient_buffer_size (100): its maximum length.
        fix_lr_compounding, fix_action_typing, fix_next_state, fix_momentum_window,
        fix_spike_correction, use_grad_scale, apply_weight_decay (all False): see above.
        seed (None): seed of the noise and exploration generators; None draws it from the global
            torch RNG at construction.
        steps_per_epoch (None): None (the epoch comes from set_epoch) or the steps per epoch.
        foreach (None): None = the compiled path where it applies (a param group of >= 2^20 elements, float32 or
            float64, one dtype and device, contiguous, torch.compile working: one compiled pass per tensor for the
            statistics, one for the histogram's bin indices, one for the update, small tensors gathered; the
            noise drawn by torch's `normal_` into kept buffers: the same numbers as the reference's `torch.randn`), else the torch._foreach_* path; True = the foreach path; False = the
            reference loop (ground truth: the other paths agree with it in float64 to rounding, with the same
            noise draws, histogram counts and controller decisions). `optim.paths.code_path` names the path.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.01,
        smoothing_factor: float = 0.1,
        gradient_centering: bool = True,
        gradient_clipping: bool = True,
        apply_noise: bool = True,
        noise_scale: float = 1e-4,
        controller: bool = True,
        adaptive_momentum: bool = True,
        entropy_weight: float = 0.1,
        loss_correction_factor: float = 0.5,
        spike_threshold: float = 1.5,
        stabilizing_factor: float = 0.9,
        q_alpha: float = 0.1,
        q_gamma: float = 0.9,
        q_epsilon: float = 0.5,
        q_epsilon_decay: float = 0.995,
        q_epsilon_min: float = 0.01,
        q_mix_prob: float = 0.8,
        grad_retention: bool = True,
        gradient_buffer_size: int = 100,
        fix_lr_compounding: bool = False,
        fix_action_typing: bool = False,
        fix_next_state: bool = False,
        fix_momentum_window: bool = False,
        fix_spike_correction: bool = False,
        use_grad_scale: bool = False,
        apply_weight_decay: bool = False,
        seed: int | None = None,
        steps_per_epoch: int | None = None,
        foreach: bool | None = None,
    ):
        check_hp(isinstance(lr, (int, float)) and lr >= 0.0, "learning rate", lr, "must be >= 0")
        check_hp(0.0 <= momentum < 1.0, "momentum", momentum, "must be in [0, 1)")
        check_hp(weight_decay >= 0.0, "weight_decay", weight_decay, "must be >= 0")
        check_hp(0.0 < smoothing_factor <= 1.0, "smoothing_factor", smoothing_factor, "must be in (0, 1]")
        check_hp(noise_scale >= 0.0, "noise_scale", noise_scale, "must be >= 0")
        check_hp(entropy_weight >= 0.0, "entropy_weight", entropy_weight, "must be >= 0")
        check_hp(0.0 < loss_correction_factor <= 1.0, "loss_correction_factor", loss_correction_factor,
                 "must be in (0, 1]")
        check_hp(spike_threshold > 0.0, "spike_threshold", spike_threshold, "must be > 0")
        check_hp(0.0 <= stabilizing_factor <= 1.0, "stabilizing_factor", stabilizing_factor, "must be in [0, 1]")
        check_hp(0.0 < q_alpha <= 1.0, "q_alpha", q_alpha, "must be in (0, 1]")
        check_hp(0.0 <= q_gamma < 1.0, "q_gamma", q_gamma, "must be in [0, 1)")
        check_hp(0.0 <= q_epsilon <= 1.0, "q_epsilon", q_epsilon, "must be in [0, 1]")
        check_hp(0.0 < q_epsilon_decay <= 1.0, "q_epsilon_decay", q_epsilon_decay, "must be in (0, 1]")
        check_hp(0.0 <= q_epsilon_min <= 1.0, "q_epsilon_min", q_epsilon_min, "must be in [0, 1]")
        check_hp(0.0 <= q_mix_prob <= 1.0, "q_mix_prob", q_mix_prob, "must be in [0, 1]")
        check_hp(isinstance(gradient_buffer_size, int) and gradient_buffer_size >= 1, "gradient_buffer_size",
                 gradient_buffer_size, "must be an int >= 1")
        check_hp(foreach in (None, True, False), "foreach", foreach, "must be None, True or False")
        check_hp(steps_per_epoch is None or (isinstance(steps_per_epoch, int) and not isinstance(steps_per_epoch, bool)
                                             and steps_per_epoch >= 1), "steps_per_epoch", steps_per_epoch,
                 "must be None or an int >= 1")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, apply_weight_decay=apply_weight_decay,
                        gradient_centering=gradient_centering, gradient_clipping=gradient_clipping,
                        apply_noise=apply_noise, noise_scale=noise_scale, foreach=foreach)
        super().__init__(params, defaults)
        self._init_run_state()
        self.steps_per_epoch = steps_per_epoch
        # Controller settings are optimizer-wide: the seed has one controller over all groups.
        self.smoothing_factor = float(smoothing_factor)
        self.controller = bool(controller)
        self.adaptive_momentum = bool(adaptive_momentum)
        self.entropy_weight = float(entropy_weight)
        self.loss_correction_factor = float(loss_correction_factor)
        self.spike_threshold = float(spike_threshold)
        self.stabilizing_factor = float(stabilizing_factor)
        self.q_alpha, self.q_gamma = float(q_alpha), float(q_gamma)
        self.q_epsilon_decay, self.q_epsilon_min = float(q_epsilon_decay), float(q_epsilon_min)
        self.q_mix_prob = float(q_mix_prob)
        self.grad_retention = bool(grad_retention)
        self.fix_lr_compounding = bool(fix_lr_compounding)
        self.fix_action_typing = bool(fix_action_typing)
        self.fix_next_state = bool(fix_next_state)
        self.fix_momentum_window = bool(fix_momentum_window)
        self.fix_spike_correction = bool(fix_spike_correction)
        self.use_grad_scale = bool(use_grad_scale)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.state["controller"] = dict(
            step=0, epoch=1, epoch_set=False, seed=int(seed), epsilon=float(q_epsilon),
            scales={k: 1.0 for k in _SCALARS}, q_table={}, loss_history=[], pending=None,
            sigma2=None, sigma2_prev=None, entropy=None, entropy_prev=None,
        )
        self._explore_gen = torch.Generator().manual_seed(int(seed) + 1)
        self._noise_gen: torch.Generator | None = None
        self._retained: deque = deque(maxlen=gradient_buffer_size)
        self._noise_bufs: dict[int, list[torch.Tensor]] = {}  # compiled path: per group, kept N(0, 1) tensors

    _NAME = _NAME

    # --- state -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Record the current epoch (the seed's `current_epoch`; enters the Q-state and the decay d)."""
        self.state["controller"]["epoch"] = int(epoch)
        self.state["controller"]["epoch_set"] = True

    @torch.compiler.disable
    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._noise_gen is None or self._noise_gen.device != device:
            self._noise_gen = torch.Generator(device=device).manual_seed(self.state["controller"]["seed"])
        return self._noise_gen

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        ctl = copy.deepcopy(self.state["controller"])
        ctl["explore_rng"] = self._explore_gen.get_state()
        if self._noise_gen is not None:
            ctl["noise_rng"] = self._noise_gen.get_state()
            ctl["noise_rng_device"] = str(self._noise_gen.device)
        sd["state"]["controller"] = ctl
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict, state=dict(state_dict["state"]))
        ctl = copy.deepcopy(state_dict["state"].pop("controller", None))
        if ctl is None:
            raise KeyError("EnhancedSGD.load_state_dict: state_dict['state'] has no 'controller' entry "
                           "(not saved by EnhancedSGD)")
        super().load_state_dict(state_dict)
        ctl["q_table"] = {tuple(k): v for k, v in ctl["q_table"].items()}
        self._explore_gen = torch.Generator()
        self._explore_gen.set_state(ctl.pop("explore_rng"))
        self._noise_gen = None
        if "noise_rng" in ctl:
            device = torch.device(ctl.pop("noise_rng_device"))
            self._noise_gen = torch.Generator(device=device)
            self._noise_gen.set_state(ctl.pop("noise_rng"))
        device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
        for key in ("sigma2", "sigma2_prev", "entropy", "entropy_prev"):
            if isinstance(ctl[key], torch.Tensor):
                ctl[key] = ctl[key].to(device)
        self.state["controller"] = ctl

    # --- diagnostics -------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """Last value and mean since the previous call of: lr (effective, group 0), momentum, sigma2,
        entropy, clip (bound; inf = off), epsilon, lr_scale, and with the controller reward,
        explore (1 = random action) and action_<scalar> (code: random mult 0-2, random add 3-5,
        greedy mult 6, greedy add 7). One host sync per call."""
        return self._diag.read()

    def retained_gradients(self) -> list[torch.Tensor]:
        """The retention deque's gradients (only those whose step had H > 0.5); syncs once per entry."""
        return [g for flag, g in self._retained if bool(flag)]

    # --- step --------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, current_epoch: int | None = None):
        """One update. With a closure (and controller=True) the Q-learning controller runs (Path B)."""
        if current_epoch is not None:
            self.set_epoch(current_epoch)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ctl = self.state["controller"]
        self._begin_step(closure is None)

        per_group = []
        all_grads = []
        for group in self.param_groups:
            ps, gs = [], []
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                check_not_sparse(p.grad, _NAME)
                ps.append(p)
                gs.append(p.grad)
            per_group.append((ps, gs))
            all_grads.extend(gs)
        if not all_grads:
            return loss

        run_controller = self.controller and loss is not None
        clip = None
        stats: dict[str, Any] = {}
        fast = self._compiled_groups(per_group)
        rows = None
        if any(g["gradient_clipping"] for g in self.param_groups) or self.grad_retention or self.controller:
            sigma2, entropy, rows = self._update_stats(all_grads, all(fast))
            if any(g["gradient_clipping"] for g in self.param_groups):
                bound = (2.0 * sigma2.sqrt()).clamp(0.5, 10.0)
                clip = torch.where(sigma2 > 0, bound, torch.full_like(bound, math.inf))
                stats["clip"] = clip
            stats["sigma2"] = sigma2
            if entropy is not None:
                stats["entropy"] = entropy

        if run_controller:
            self._controlled_update(loss, per_group, all_grads, clip, stats, fast, rows)
        else:
            lrs = [g["lr"] for g in self.param_groups]
            moms = [g["momentum"] for g in self.param_groups]
            self._update(per_group, all_grads, lrs, moms, clip, None, None, stats, fast, rows)
        return loss

    @torch.compiler.disable
    def _controlled_update(self, loss, per_group, all_grads, clip, stats, fast, rows) -> None:
        """Path B: the controller's lr and momentum change every step and come from host values (the Q-table),
        so the whole controlled update runs outside any compiled region (no per-value recompiles)."""
        lrs, moms, gscale, obs = self._control(loss)
        self._update(per_group, all_grads, lrs, moms, clip, gscale, obs, stats, fast, rows)
        self._learn(obs)

    def _update(self, per_group, all_grads, lrs, moms, clip, gscale, obs, stats, fast, rows) -> None:
        """The groups' heavy-ball updates of the processed gradients, then the step's diagnostics.

        `fast[i]`: group i takes the compiled path; `rows`: per-tensor [sum, sum of squares] of `all_grads`
        from the statistics (compiled path only), else None."""
        noise_gen = self._noise_generator(all_grads[0].device)
        keep = self._retention_wanted(obs)
        offset = 0
        for gi, (group, (ps, gs), lr, mu) in enumerate(zip(self.param_groups, per_group, lrs, moms)):
            group_rows = None if rows is None else rows[offset:offset + len(gs)]
            offset += len(gs)
            if not ps:
                continue
            bufs = []
            for p in ps:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(st["momentum_buffer"])
            if fast[gi]:
                processed = self._group_compiled(gi, group, ps, gs, bufs, lr, mu, clip, gscale, noise_gen,
                                                 group_rows, keep)
            else:
                fn = self._group_reference if group["foreach"] is False else self._group_foreach
                processed = fn(group, ps, gs, bufs, lr, mu, clip, gscale, noise_gen)
            if self.grad_retention:
                self._retain(processed if keep else None, gs, obs)

        self._record_step(stats, lrs[0], moms[0])

    # The host-side parts (Python-int counters, the Q-table, the noise generator, histc's host bounds, the
    # retention deque) run outside any torch.compile'd region, so that torch.compile(opt.step) neither breaks
    # inside a loop nor guards on values that change every step.
    @torch.compiler.disable
    def _begin_step(self, no_closure: bool) -> None:
        """Advance the step counter (and the epoch with steps_per_epoch); the one-time warnings."""
        ctl = self.state["controller"]
        if self.steps_per_epoch is not None:
            ctl["epoch"] = ctl["step"] // self.steps_per_epoch + 1
        ctl["step"] += 1
        if self.controller and no_closure:
            self._warn_once("closure", f"{_NAME}: controller=True but step() got no closure, so the Q-learning "
                            "controller does not run (Path A: the seed's experiments); pass a closure that "
                            "returns the loss, or controller=False ('enhanced_sgd_noclosure') to silence this")
        elif self.controller and self.steps_per_epoch is None and not ctl.get("epoch_set", True):
            self._warn_once("epoch", f"{_NAME}: the controller reads the epoch (Q-state and lr decay), but neither "
                            "set_epoch() nor steps_per_epoch= is used, so the epoch stays 1; call "
                            "opt.set_epoch(epoch) at each epoch start or pass steps_per_epoch=len(train_loader)")

    @torch.compiler.disable
    def _draw_noise(self, gen: torch.Generator, gs: list[torch.Tensor]) -> list[torch.Tensor]:
        """N(0, 1) tensors shaped like `gs`, drawn in order from the noise generator."""
        return [torch.randn(g.shape, generator=gen, device=g.device, dtype=g.dtype) for g in gs]

    @torch.compiler.disable
    def _update_stats(self, grads: list[torch.Tensor], compiled_path: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """sigma2 (EMA + stabilisation) and the histogram entropy of all gradients, as device tensors, and on
        the compiled path the per-tensor [sum, sum of squares] rows ([T, 2]; else None)."""
        ctl = self.state["controller"]
        dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        fast = all(g["foreach"] is not False for g in self.param_groups)
        n = sum(g.numel() for g in grads)
        rows = bounds = None
        if compiled_path:
            # One compiled pass per tensor for sum, sum of squares, min and max (small tensors gathered).
            flat = None
            rows, lo, hi = _tensor_stats(grads)
            s = rows.double().sum(0)
            var = ((s[1] - s[0] * s[0] / n) / max(n - 1, 1)).clamp_min(0).to(dtype)
            bounds = (lo.to(dtype), hi.to(dtype))
        elif fast:
            # No concatenated copy of every gradient: per-tensor sums give the variance (in float64) and
            # per-tensor histograms over the global range sum to the histogram of the concatenation.
            flat = None
            s = torch.stack([torch.stack([g.sum(), (g * g).sum()]).double() for g in grads]).sum(0)
            var = ((s[1] - s[0] * s[0] / n) / max(n - 1, 1)).clamp_min(0).to(dtype)  # 0 for one element
        else:
            flat = torch.cat([g.reshape(-1).to(dtype) for g in grads])
            # Var of one element is undefined (the seed gets NaN); 0 keeps clipping off instead.
            var = flat.var() if n > 1 else flat.new_zeros(())
        zero = var.new_zeros(())
        old = ctl["sigma2"] if ctl["sigma2"] is not None else zero
        prev = ctl["sigma2_prev"] if ctl["sigma2_prev"] is not None else zero
        a, k = self.smoothing_factor, self.stabilizing_factor
        sigma2 = a * var + (1 - a) * old.to(dtype)
        prev = prev.to(dtype)
        sigma2 = torch.where((sigma2 - prev).abs() > k, prev * k + (1 - k) * sigma2, sigma2)
        ctl["sigma2"], ctl["sigma2_prev"] = sigma2, prev
        # Only retention and the controller read H; the histogram is the costliest statistic.
        entropy = None
        if self.grad_retention or self.controller:
            entropy = histogram_entropy(flat if flat is not None else [g.reshape(-1).to(dtype) for g in grads],
                                        fast_counts=fast, bounds=bounds)
            ctl["entropy_prev"], ctl["entropy"] = ctl["entropy"], entropy
        return sigma2, entropy, rows

    @torch.compiler.disable
    def _record_step(self, stats: dict, lr, momentum) -> None:
        ctl = self.state["controller"]
        self._diag.record_all({**stats, "lr": lr, "momentum": momentum, "epsilon": ctl["epsilon"],
                               "lr_scale": ctl["scales"]["lr_scale"]})

    def _compiled_groups(self, per_group) -> list[bool]:
        """Per group: whether it takes the compiled path (foreach=None, float32/float64 parameters and gradients of
        one dtype on one device, contiguous, >= 2^20 elements in the group where torch.compile works)."""
        out = []
        for group, (ps, gs) in zip(self.param_groups, per_group):
            ok = group["foreach"] is None and bool(ps)
            if ok:
                dt, dev = ps[0].dtype, ps[0].device
                ok = dt in (torch.float32, torch.float64) and all(
                    x.dtype == dt and x.device == dev and x.is_contiguous() for x in (*ps, *gs))
            out.append(ok and use_compiled("auto", sum(p.numel() for p in ps), ps[0].device))
        return out

    def _group_path(self, group) -> str:
        """Code path of a group for `optim.paths.code_path` (from its parameters, as if each had a gradient)."""
        if group["foreach"] is False:
            return "reference"
        ps = [p for p in group["params"] if p.numel() > 0]
        return "compiled" if self._compiled_groups([(ps, ps)])[0] else "foreach"

    @torch.compiler.disable
    def _group_compiled(self, gi, group, ps, gs, bufs, lr, mu, clip, gscale, gen, rows, keep):
        """One compiled kernel per tensor (small tensors gathered into one) for centering, clipping, noise,
        momentum and the parameter update, reading g, noise, buf, p once; the noise is drawn tensor by tensor, in
        order, into kept buffers by torch's `normal_`: the reference's `torch.randn` draws, the same numbers from the
        same generator stream. The per-tensor means
        come from the statistics' sums (`rows`). Returns the processed gradients if `keep`, else None."""
        dt, dev = ps[0].dtype, ps[0].device
        centering, noise = group["gradient_centering"], group["apply_noise"]
        wd = group["apply_weight_decay"] and group["weight_decay"] != 0
        if centering and rows is None:
            rows = _tensor_stats(gs)[0]
        if noise:
            nb = self._noise_bufs.get(gi)
            if nb is None or [x.shape for x in nb] != [g.shape for g in gs]:
                nb = self._noise_bufs[gi] = [torch.empty_like(g) for g in gs]
            for x in nb:
                x.normal_(generator=gen)
        t = len(gs)
        if centering:
            means = rows[:, 0] / _on_device([float(g.numel()) for g in gs], dt, dev)
        else:
            means = torch.zeros(t, dtype=dt, device=dev)
        if clip is not None and group["gradient_clipping"]:
            c = clip.to(dt).reshape(1)
        else:
            c = torch.full((1,), math.inf, dtype=dt, device=dev)
        host = _on_device([group["noise_scale"], 1.0 if gscale is None else gscale, group["weight_decay"], mu, -lr],
                          dt, dev)
        coefs = torch.cat([means[:, None], (-c).expand(t, 1), c.expand(t, 1), host.expand(t, 5)], 1)
        out = [None] * t if keep else None
        big, buckets = partition(gs)
        kernel = compiled(_apply_out_kernel if keep else _apply_kernel)
        for i in big:
            r = kernel(alias_1d(ps[i]), alias_1d(gs[i]), alias_1d(nb[i]) if noise else None, alias_1d(bufs[i]),
                       coefs[i].clone(), noise, wd)
            if keep:
                out[i] = r.view(gs[i].shape)
        if big:
            bump_versions([ps[i] for i in big] + [bufs[i] for i in big])
        for idx, bucket in buckets:
            p_flat, b_flat = bucket.gather([ps[i] for i in idx]), bucket.gather([bufs[i] for i in idx])
            n_flat = bucket.gather([nb[i] for i in idx]) if noise else None
            r = kernel(p_flat, bucket.gather([gs[i] for i in idx]), n_flat, b_flat, bucket.expand(coefs[idx].T),
                       noise, wd)
            bucket.scatter(p_flat, [ps[i] for i in idx])
            bucket.scatter(b_flat, [bufs[i] for i in idx])
            if keep:
                for i, x in zip(idx, bucket.split(r, [gs[i] for i in idx])):
                    out[i] = x
        return out

    # Both group updates apply the same ops in the same order, drawing the noise tensor by tensor
    # from the same generator, so they agree in float64 to rounding.
    def _group_reference(self, group, ps, gs, bufs, lr, mu, clip, gscale, gen):
        out = []
        for p, g, buf in zip(ps, gs, bufs):
            if group["gradient_centering"]:
                g = g - g.mean()
            if clip is not None and group["gradient_clipping"]:
                g = torch.clamp(g, min=-clip, max=clip)
            if group["apply_noise"]:
                n = torch.randn(g.shape, generator=gen, device=g.device, dtype=g.dtype)
                g = torch.add(g, n, alpha=group["noise_scale"])
            if gscale is not None:
                g = torch.mul(g, gscale)
            if group["apply_weight_decay"] and group["weight_decay"] != 0:
                g = torch.add(g, p, alpha=group["weight_decay"])
            buf.mul_(mu).add_(g)
            p.add_(buf, alpha=-lr)
            out.append(g)
        return out

    def _group_foreach(self, group, ps, gs, bufs, lr, mu, clip, gscale, gen):
        fresh = False  # whether `gs` are our own tensors (never modify p.grad in place)
        if group["gradient_centering"]:
            gs = torch._foreach_sub(gs, [g.mean() for g in gs])
            fresh = True
        if clip is not None and group["gradient_clipping"]:
            if fresh:
                torch._foreach_clamp_min_(gs, [-clip] * len(gs))
            else:
                gs = torch._foreach_clamp_min(gs, [-clip] * len(gs))
                fresh = True
            torch._foreach_clamp_max_(gs, [clip] * len(gs))
        if group["apply_noise"]:
            noise = self._draw_noise(gen, gs)
            if fresh:
                torch._foreach_add_(gs, noise, alpha=group["noise_scale"])
            else:
                gs = torch._foreach_add(gs, noise, alpha=group["noise_scale"])
                fresh = True
        if gscale is not None:
            gs = torch._foreach_mul(gs, gscale)
        if group["apply_weight_decay"] and group["weight_decay"] != 0:
            gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, gs)
        torch._foreach_add_(ps, bufs, alpha=-lr)
        return gs

    def _retention_wanted(self, obs) -> bool:
        """Whether this step's processed gradients can enter the retention deque: False when retention is off or
        H_t <= 0.5 is known on the host (Path B, or H on the CPU, where reading it costs no device sync)."""
        if not self.grad_retention:
            return False
        if obs is not None:
            return obs["entropy"] > 0.5
        entropy = self.state["controller"]["entropy"]
        return entropy is None or entropy.device.type != "cpu" or bool(entropy > 0.5)

    @torch.compiler.disable
    def _retain(self, processed, raw, obs) -> None:
        """Path B: clone the processed gradients if H_t > 0.5 (the seed). Path A: one (H_t > 0.5, gradient) entry
        per tensor; `processed` is None where H_t <= 0.5 is already known (`_retention_wanted`), and then the
        entries hold no gradient (`retained_gradients()` never returns those, so the deque reads the same)."""
        entropy = self.state["controller"]["entropy"]
        if obs is not None:  # Path B: H is already on the host
            if obs["entropy"] > 0.5:
                self._retained.extend(g.detach().clone() for g in processed)
            return
        if processed is None:
            self._retained.extend((False, None) for _ in raw)
            return
        flag = entropy > 0.5
        for g, r in zip(processed, raw):
            self._retained.append((flag, g.detach().clone() if g is r else g.detach()))

    # --- controller (Path B) -----------------------------------------------------------------
    def _control(self, loss) -> tuple[list[float], list[float], float | None, dict]:
        """Loss-spike check, epsilon-greedy action, lr / momentum adjustment. One host sync."""
        ctl = self.state["controller"]
        loss_t = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        dev = ctl["sigma2"].device
        prev_h = ctl["entropy_prev"] if ctl["entropy_prev"] is not None else ctl["entropy"]
        vals = torch.stack([loss_t.reshape(()).to(dev, torch.float64), ctl["sigma2"].double(),
                            ctl["sigma2_prev"].double(), ctl["entropy"].double(), prev_h.double()]).tolist()
        obs = dict(zip(("loss", "sigma2", "sigma2_prev", "entropy", "entropy_prev"), vals))
        epoch = ctl["epoch"]

        hist = ctl["loss_history"]
        hist.append(obs["loss"])
        if len(hist) > 100:
            del hist[0]
        spike = obs["loss"] > self.spike_threshold * (sum(hist) / len(hist))
        moms = [g["momentum"] for g in self.param_groups]
        if spike:
            moms = [m * 0.9 for m in moms]
            if self.fix_spike_correction:
                for g in self.param_groups:
                    g["lr"] = g["lr"] * self.loss_correction_factor
            # else: the seed halves lr_eff here and overwrites it below in the same step.

        s = (round(obs["loss"], 2), round(obs["sigma2"], 2), round(obs["entropy"], 2), int(epoch), 1)
        if self.fix_next_state and ctl["pending"] is not None:
            ps, pkeys, pr = ctl["pending"]
            self._q_update(tuple(ps), [tuple(k) for k in pkeys], pr, s)
        action = self._choose(s)
        scales = ctl["scales"]
        for name, value, kind in action:
            if kind == "mult":
                scales[name] *= value
            else:
                scales[name] += value

        d = max(0.5, 1 - epoch / 20)
        lr_adj = min(max(scales["lr_scale"], 0.5), 1.5 * d)
        lrs = []
        for m_i, g in enumerate(self.param_groups):
            lr_eff = g["lr"] * lr_adj
            if not self.fix_lr_compounding:
                g["lr"] = lr_eff
            lrs.append(lr_eff)
            if self.adaptive_momentum:
                hi = 0.99 if self.fix_momentum_window else 0.99 * d
                moms[m_i] = min(max(moms[m_i] * scales["momentum_scale"], 0.85), hi)
            g["momentum"] = moms[m_i]
        gscale = min(max(scales["grad_scale"], 0.5), 1.5) if self.use_grad_scale else None
        obs.update(state=s, action=action)
        return lrs, moms, gscale, obs

    def _new_q_row(self) -> dict[str, float]:
        row = {f"{k}_mult": 0.0 for k in _SCALARS}
        row.update({f"{k}_add": 0.0 for k in _SCALARS})
        return row

    def _choose(self, s) -> list[tuple[str, float, str]]:
        """[(scalar, value, kind)], kind = how it is applied and which Q key it updates."""
        ctl = self.state["controller"]
        gen = self._explore_gen
        action = []
        if float(torch.rand((), generator=gen, dtype=torch.float64)) < ctl["epsilon"]:
            mult = float(torch.rand((), generator=gen, dtype=torch.float64)) < self.q_mix_prob
            values = _MULT if mult else _ADD
            for name in _SCALARS:
                i = int(torch.randint(0, 3, (), generator=gen))
                action.append((name, values[i], "mult" if mult else "add", i + (0 if mult else 3)))
            explore = 1.0
        else:
            row = ctl["q_table"].setdefault(s, self._new_q_row())
            for name in _SCALARS:
                qm, qa = row[f"{name}_mult"], row[f"{name}_add"]
                if qm >= qa:
                    action.append((name, 1.0 + qm, "mult", _GREEDY_MULT))
                else:
                    action.append((name, qa, "add", _GREEDY_ADD))
            explore = 0.0
        ctl["epsilon"] = max(self.q_epsilon_min, ctl["epsilon"] * self.q_epsilon_decay)
        self._diag.record("explore", explore)
        out = []
        for name, value, typed, code in action:
            self._diag.record(f"action_{name}", float(code))
            kind = typed if self.fix_action_typing else ("mult" if value in _MULT else "add")
            out.append((name, value, kind))
        return out

    def _q_update(self, s, keys: list[tuple[str, str]], reward: float, s_next) -> None:
        q = self.state["controller"]["q_table"]
        row = q.setdefault(s, self._new_q_row())
        future = max(q[s_next].values()) if s_next in q else 0.0
        for name, kind in keys:
            k = f"{name}_{kind}"
            row[k] += self.q_alpha * (reward + self.q_gamma * future - row[k])

    def _learn(self, obs: dict) -> None:
        """Reward and Q-update after the parameter update (seed: s' = s)."""
        ctl = self.state["controller"]
        reward = -(abs(obs["sigma2"] - obs["sigma2_prev"])
                   + self.entropy_weight * abs(obs["entropy"] - obs["entropy_prev"]))
        keys = [(name, kind) for name, _, kind in obs["action"]]
        if self.fix_next_state:
            ctl["pending"] = (obs["state"], keys, reward)
        else:
            self._q_update(obs["state"], keys, reward, obs["state"])
        ctl["sigma2_prev"] = ctl["sigma2"]
        self._diag.record("reward", reward)


def _to_sgd(hp: dict) -> dict:
    """torch SGD kwargs: weight decay only where EnhancedSGD applies it (the seed never does)."""
    wd = hp.get("weight_decay", 0.01) if hp.get("apply_weight_decay", False) else 0.0
    return {"lr": hp["lr"], "momentum": hp["momentum"], "dampening": 0.0, "nesterov": False, "weight_decay": wd}


_MECHANISMS_OFF = dict(gradient_centering=False, gradient_clipping=False, apply_noise=False,
                       controller=False, grad_retention=False)

ENTRIES: list[Entry] = [
    Entry("enhanced_sgd", EnhancedSGD, {"lr": 0.01, "momentum": 0.9}, "sgd",
          mechanisms_off=_MECHANISMS_OFF, to_baseline=_to_sgd, needs_closure=True,
          summary="EnhancedSGD with its Q-learning controller (Path B: step() gets a closure)"),
    Entry("enhanced_sgd_noclosure", EnhancedSGD, {"lr": 0.01, "momentum": 0.9, "controller": False}, "sgd",
          mechanisms_off=_MECHANISMS_OFF, to_baseline=_to_sgd,
          summary="EnhancedSGD as the seed's experiments ran it (Path A: no controller): "
                  "heavy-ball SGD + gradient centering + clipping + noise"),
]
