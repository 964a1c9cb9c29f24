"""Planeswalker loss multiplexing: a weighted-delta accumulator over named loss terms whose weights
pursue each term's rate of change (ExamDay/Planeswalker, "Weighted Delta Accumulator")."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn


class Planeswalker(nn.Module):
    """Multiplex named loss terms: the gradient is a weighted sum, the value never jumps on re-weighting.

    Seed:
        ExamDay/Planeswalker @ df9d184, `planeswalker.py` (class `Loss_Multiplex`); spec:
        seeds-spec.md section 3. A loss-composition rule, usable with any optimizer.

    Math:
        Terms i = 1..n with values L_i(theta_t), scales s_i ("auto": s_i = 1 / L_i(theta_1)), weights
        w_i (init 1/n), histories h_i of L_i (at most `log_length` entries), accumulator A (init 0):
            prev_i = h_i[-2] after appending L_i(theta_t) (0 while a history has < 2 entries)
            M_t    = A + sum_i w_i s_i (L_i(theta_t) - prev_i);   A <- detach(M_t)
        so grad M_t = sum_i w_i s_i grad L_i. Weight step (`step_weights()`, after M_t is built),
        once len(h) >= base_window: for each i, on s_i h_i, fit an OLS line to the last W points vs
        their index with W = base_window, base_window + window_step, ... <= len(h) until the slope's
        standard error < 5e-3 (else the last fit); slew_i = |slope_i|;
            u_i = slew_i / sum_j slew_j   (1/n if the sum is exactly 0)
            d_i = u_i - w_i;  w_i <- w_i + max(pursuit_rate d_i, min(d_i, 1e-5))   (no renormalisation)
        With pool_size P > 1 the histories start as [0] and each entry is the mean of L_i over P
        steps (the seed's off-by-one pooling is kept). mode="sum" returns sum_i L_i and never
        re-weights (the "off" setting).

    Deviations from the seed:
        - Terms are passed as a dict of already computed losses (the seed calls goal functions).
        - Histories, weights, scales and the accumulator are float64 tensors on the losses' device
          and the window search is one vectorised OLS over all candidate windows, so neither the
          forward nor the weight step syncs with the host (seed: `.item()` per term per step and
          scipy `linregress` on the host). Standard errors follow scipy's formula (2-point fits: 0).
        - `auto_pursuit` defaults to False: the seed's class default is True, but its experiment
          used False and `step_weights=True` on every call, which is `pw(...)` then
          `pw.step_weights()` here (the same for pool_size 1).
        - When every term is exactly flat (sum_j slew_j = 0) the targets are 1/n: the seed divides 0 by 0
          there and its weights become NaN for the rest of the run (no flag: NaN weights cannot train).
        - `target="rect_delta"` is the seed's commented-out alternative (u_i ~ max_j slope_j -
          slope_i on signed slopes). The README's "gradient magnitude" reading (u_i ~ ||grad L_i||)
          is not implemented: it needs one backward per term.

    Warnings:
        - The weights pursue the temporal slope of each normalised loss, not gradient norms: a term
          that stops changing loses weight even if it is far from its minimum.
        - With base_window 2 (the seed's experiment) the targets are normalised one-step changes,
          which are very noisy.
        - The returned value is a path integral of weighted improvements, not a loss level: compare
          runs on the raw terms (`values()`), not on M_t.

    Args:
        names: the term names; every call must pass exactly these keys.
        scale ("auto"): "auto", a sequence (in `names` order) or a mapping name -> scale.
        base_window (15), window_step (5): OLS window search.
        pursuit_rate (0.1): weight pursuit rate rho_w.
        log_length (200): history length.
        mode ("multiplex"): "multiplex" or "sum".
        auto_pursuit (False): step the weights inside every call with step % pool_size == 0.
        pool_size (1): steps averaged into one history entry.
        stderr_threshold (5e-3), min_increase (1e-5): the seed's hard-coded constants.
        target ("slope"): "slope" (the seed's rule) or "rect_delta".
    """

    def __init__(self, names: Sequence[str], scale: Any = "auto", base_window: int = 15, window_step: int = 5,
                 pursuit_rate: float = 0.1, log_length: int = 200, mode: str = "multiplex",
                 auto_pursuit: bool = False, pool_size: int = 1, stderr_threshold: float = 5e-3,
                 min_increase: float = 1e-5, target: str = "slope"):
        super().__init__()
        names = list(names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"Invalid names: {names!r} (must be a non-empty list of distinct strings)")
        if mode not in ("multiplex", "sum"):
            raise ValueError(f"Invalid mode: {mode!r} (must be 'multiplex' or 'sum')")
        if target not in ("slope", "rect_delta"):
            raise ValueError(f"Invalid target: {target!r} (must be 'slope' or 'rect_delta')")
        for arg, v, lo in (("base_window", base_window, 2), ("window_step", window_step, 1),
                           ("log_length", log_length, 2), ("pool_size", pool_size, 1)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"Invalid {arg}: {v!r} (must be an int >= {lo})")
        if base_window > log_length:
            raise ValueError(f"Invalid base_window: {base_window} (must be <= log_length {log_length})")
        if not 0.0 < pursuit_rate <= 1.0:
            raise ValueError(f"Invalid pursuit_rate: {pursuit_rate!r} (must be in (0, 1])")
        n = len(names)
        self.names = names
        self.mode, self.target = mode, target
        self.base_window, self.window_step, self.log_length = base_window, window_step, log_length
        self.pursuit_rate, self.auto_pursuit, self.pool_size = float(pursuit_rate), bool(auto_pursuit), pool_size
        self.stderr_threshold, self.min_increase = float(stderr_threshold), float(min_increase)
        self.auto_scale = scale == "auto"
        if self.auto_scale:
            scales = torch.ones(n, dtype=torch.float64)
        else:
            if isinstance(scale, Mapping):
                self._check_names(scale, "scale")
                scale = [scale[k] for k in names]
            if len(scale) != n:
                raise ValueError(f"Invalid scale: {scale!r} (must be 'auto' or {n} values, one per term)")
            scales = torch.tensor([float(s) for s in scale], dtype=torch.float64)
        self.register_buffer("scales", scales)
        self.register_buffer("weights", torch.full((n,), 1.0 / n, dtype=torch.float64))
        self.register_buffer("history", torch.zeros(n, log_length, dtype=torch.float64))
        self.register_buffer("accumulator", torch.zeros((), dtype=torch.float64))
        self.t = 1  # the seed's step counter (1-based)
        self.length = 1 if pool_size > 1 else 0  # entries used in `history` (pooled histories start as [0])
        self._last: dict[str, torch.Tensor] = {}

    # --- state beyond the buffers ------------------------------------------------------------
    def get_extra_state(self) -> dict[str, int]:
        return {"t": self.t, "length": self.length}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.t, self.length = int(state["t"]), int(state["length"])

    def _check_names(self, got: Mapping, what: str) -> None:
        missing = [k for k in self.names if k not in got]
        extra = [k for k in got if k not in self.names]
        if missing or extra:
            raise ValueError(f"Planeswalker {what}: missing terms {missing}, unknown terms {extra}; "
                             f"expected exactly {self.names}")

    # --- forward -----------------------------------------------------------------------------
    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """M_t for this step's term values {name: 0-d tensor} (or the plain sum in mode "sum")."""
        self._check_names(losses, "losses")
        vals = [torch.as_tensor(losses[k]) for k in self.names]
        out_dtype = vals[0].dtype if vals[0].is_floating_point() else torch.get_default_dtype()
        device = vals[0].device
        if self.weights.device != device:
            self.to(device)
        L = torch.stack([v.reshape(()).to(torch.float64) for v in vals])  # [n], keeps the graph
        if self.mode == "sum":
            self._last = {"raw": L.detach(), "scaled": L.detach(), "weighted": L.detach(),
                          "weight": torch.ones_like(self.weights)}
            return L.sum().to(out_dtype)
        Ld = L.detach()
        if self.t == 1 and self.auto_scale:
            self.scales.copy_(1.0 / Ld)
        P = self.pool_size
        if self.t % P == 0:
            if self.length == self.log_length:  # drop the oldest entry
                self.history.copy_(torch.roll(self.history, -1, dims=1))
                self.length -= 1
            self.history[:, self.length] = Ld / P
            self.length += 1
        else:
            self.history[:, self.length - 1] += Ld / P
        prev = self.history[:, self.length - 2] if self.length >= 2 else torch.zeros_like(Ld)
        weights = self.weights.clone()
        M = self.accumulator + (weights * self.scales * (L - prev)).sum()
        self.accumulator.copy_(M.detach())
        scaled = Ld * self.scales
        self._last = {"raw": Ld, "scaled": scaled, "weighted": scaled * weights, "weight": weights}
        if self.auto_pursuit and self.t % P == 0:
            self.step_weights()
        self.t += 1
        return M.to(out_dtype)

    @torch.no_grad()
    def slopes(self) -> torch.Tensor | None:
        """OLS slope of each scaled history over its selected window ([n]), None before base_window."""
        n_hist = self.length
        if n_hist < self.base_window:
            return None
        windows = list(range(self.base_window, n_hist + 1, self.window_step))
        W = torch.tensor(windows, dtype=torch.float64, device=self.history.device)      # [K]
        wmax = windows[-1]
        # y_end[:, m] = the m-th most recent entry; in window k it sits at x = W_k - 1 - m.
        y_end = (self.history[:, n_hist - wmax:n_hist] * self.scales[:, None]).flip(1)   # [n, wmax]
        m = torch.arange(wmax, dtype=torch.float64, device=W.device)
        mask = (m[None, :] < W[:, None]).to(torch.float64)                                # [K, wmax]
        x = (W[:, None] - 1 - m[None, :]) * mask
        xm = (W - 1) / 2
        ym = (y_end[:, None, :] * mask).sum(-1) / W                                       # [n, K]
        dx = (x - xm[:, None]) * mask                                                     # [K, wmax]
        dy = (y_end[:, None, :] - ym[..., None]) * mask                                   # [n, K, wmax]
        ssxm = (dx * dx).sum(-1) / W                                                      # [K]
        ssxym = (dx * dy).sum(-1) / W
        ssym = (dy * dy).sum(-1) / W
        slope = ssxym / ssxm
        r = torch.where(ssym == 0, torch.zeros_like(ssym), ssxym / (ssxm * ssym).clamp_min(1e-300).sqrt())
        r = r.clamp(-1.0, 1.0)
        df = (W - 2).clamp_min(1)
        stderr = torch.where(W > 2, ((1 - r * r) * ssym / ssxm / df).clamp_min(0).sqrt(), torch.zeros_like(ssym))
        ok = stderr < self.stderr_threshold                                               # [n, K]
        first = torch.where(ok.any(-1), ok.to(torch.int64).argmax(-1), torch.full_like(ok[:, 0], len(windows) - 1,
                                                                                       dtype=torch.int64))
        return slope.gather(1, first[:, None]).squeeze(1)

    @torch.no_grad()
    def step_weights(self) -> None:
        """Move the weights toward each term's share of the total rate of change (no-op in sum mode)."""
        if self.mode == "sum":
            return
        slope = self.slopes()
        if slope is None:
            return
        if self.target == "slope":
            drive = slope.abs()
        else:
            drive = slope.max() - slope
        total = drive.sum()
        n = drive.numel()
        u = torch.where(total == 0, torch.full_like(drive, 1.0 / n), drive / total)
        d = u - self.weights
        self.weights.add_(torch.maximum(self.pursuit_rate * d, d.clamp_max(self.min_increase)))

    # --- logging -----------------------------------------------------------------------------
    def values(self) -> dict[str, float]:
        """Last call's per-term raw, scaled and weighted values and weights (one host sync)."""
        if not self._last:
            return {}
        stacked = torch.stack([self._last[k] for k in ("raw", "scaled", "weighted", "weight")]).tolist()
        out = {}
        for j, kind in enumerate(("raw", "scaled", "weighted", "weight")):
            for i, name in enumerate(self.names):
                out[f"{name}/{kind}"] = stacked[j][i]
        return out

    def weights_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights.tolist()))

    def extra_repr(self) -> str:
        return f"names={self.names}, mode={self.mode!r}, base_window={self.base_window}, pursuit_rate={self.pursuit_rate}"
