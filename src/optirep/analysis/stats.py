"""Statistics for per-seed results: summaries, Welch tests, Holm correction, effect sizes, time-to-target.

The protocol (docs/anchors A, "Adopt" 4-6): mean +- std and a 95 % t-interval per arm; Welch's
t-test of candidate vs baseline; Holm-Bonferroni across a claim's comparisons; Hedges' g as the
effect size; paired seed wins; AlgoPerf-style time-to-target where a miss is infinite.

Missing values: NaN marks a run that diverged (its `metrics.json` carries NaN metrics). Every
function drops NaNs before computing and says how many it dropped, so a diverged seed is visible in
the table instead of silently shrinking n. `paired_wins` instead counts a diverged seed as a loss.
All functions return plain Python floats/ints (JSON-ready); NaN where a quantity is undefined.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import special
from scipy import stats as st

#: Two-sided confidence level of every interval.
CONFIDENCE = 0.95


def _clean(values, name: str = "values") -> tuple[np.ndarray, int]:
    """float64 array without NaNs, and the number of NaNs removed."""
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
    nan = np.isnan(a)
    return a[~nan], int(nan.sum())


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """n, mean, std (ddof=1), sem and a t-interval for the mean, ignoring NaN (diverged) values.

    Returns:
        dict(n, n_nan, mean, std, sem, ci_low, ci_high). n counts the non-NaN values. n = 0 gives
        NaN everywhere; n = 1 gives the value as mean and NaN std/sem/CI. Identical values give
        std 0 and a zero-width interval. An infinite value (e.g. a time-to-target miss) is kept and
        makes the mean infinite and std/CI NaN: a miss is not a number one can average away.
    """
    a, n_nan = _clean(values)
    n = int(a.size)
    out = {"n": n, "n_nan": n_nan, "mean": math.nan, "std": math.nan, "sem": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    out["mean"] = float(a.mean())
    if n == 1:
        return out
    if not np.all(np.isfinite(a)):
        return out
    std = float(a.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sem
    out.update(std=std, sem=sem, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Two-sided Welch t-test of mean(a) - mean(b), with the Welch-Satterthwaite interval.

    Math:
        diff = mean(a) - mean(b);  se^2 = var_a/n_a + var_b/n_b  (ddof=1)
        t = diff / se;  df = se^4 / ((var_a/n_a)^2/(n_a-1) + (var_b/n_b)^2/(n_b-1))
        p = 2 * P(T_df > |t|);  CI = diff -+ t_{df, 0.975} * se
    Same numbers as `scipy.stats.ttest_ind(a, b, equal_var=False)` (checked in the tests).

    Degenerate cases (flagged in `degenerate`, None otherwise):
        * "too_few": fewer than 2 non-NaN values in an arm. No variance, so t, df, p and the CI
          are NaN; diff is still reported when both arms have a value.
        * "zero_variance": both arms constant (se = 0), where scipy returns NaN. We take the limit
          instead: equal constants give t = 0, p = 1 (no evidence of a difference); different
          constants give t = +-inf, p = 0 and a zero-width CI at diff. df is NaN. This only
          happens with quantised metrics (e.g. 100 % accuracy in every seed), where the
          separation really is complete.

    Returns:
        dict(t, df, p, diff, ci_low, ci_high, n_a, n_b, n_nan_a, n_nan_b, degenerate).
    """
    xa, nan_a = _clean(a, "a")
    xb, nan_b = _clean(b, "b")
    na, nb = int(xa.size), int(xb.size)
    out = {"t": math.nan, "df": math.nan, "p": math.nan, "diff": math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "n_a": na, "n_b": nb, "n_nan_a": nan_a, "n_nan_b": nan_b,
           "degenerate": None}
    if na and nb:
        out["diff"] = diff = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        out["degenerate"] = "too_few"
        return out
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se2 = va + vb
    if se2 == 0.0:
        out["degenerate"] = "zero_variance"
        if diff == 0.0:
            out.update(t=0.0, p=1.0)
        else:
            out.update(t=math.copysign(math.inf, diff), p=0.0)
        out.update(ci_low=diff, ci_high=diff)
        return out
    se = math.sqrt(se2)
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    out.update(t=t, df=df, p=float(2.0 * st.t.sf(abs(t), df)), ci_low=diff - half,
               ci_high=diff + half)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Math: with the m non-NaN p-values sorted ascending p_(1) <= ... <= p_(m),
        adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j)),
    so the adjusted values are monotone in the raw ones and capped at 1. Reject H_(i) at level
    alpha iff adj_(i) <= alpha. NaN (a comparison that could not be tested) passes through as NaN
    and is not counted in m.
    """
    p = np.asarray(list(pvalues), dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a flat list of numbers, got shape {p.shape}")
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)].tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(ok)
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        scaled = (m - np.arange(m)) * p[order]
        out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(v) for v in out]


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Bias-corrected standardised mean difference of a - b (Hedges' g), NaNs dropped.

    Math: d = (mean_a - mean_b) / s_p with the pooled s_p^2 = ((n_a-1) var_a + (n_b-1) var_b) / df,
    df = n_a + n_b - 2; g = J(df) * d with the exact correction
    J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))  (~ 1 - 3 / (4 df - 1)).

    Degenerate cases: NaN when an arm is empty or df < 2 (J undefined); when s_p = 0, 0.0 for equal
    means and +-inf otherwise (complete separation, as in `welch`).
    """
    xa, _ = _clean(a, "a")
    xb, _ = _clean(b, "b")
    na, nb = xa.size, xb.size
    df = na + nb - 2
    if na == 0 or nb == 0 or df < 2:
        return math.nan
    diff = float(xa.mean() - xb.mean())
    sp2 = ((na - 1) * xa.var(ddof=1 if na > 1 else 0) + (nb - 1) * xb.var(ddof=1 if nb > 1 else 0)) / df
    if sp2 == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return float(j * diff / math.sqrt(sp2))


def time_to_target(steps: Sequence[float], values: Sequence[float], target: float,
                   higher_is_better: bool = True, times: Sequence[float] | None = None) -> dict:
    """First evaluation at which a metric reaches `target` (AlgoPerf's time-to-result).

    Args:
        steps: optimizer step of each evaluation, non-decreasing (a repeated step, e.g. an
            evaluation logged again after a resume, is allowed; the first one counts).
        values: the metric at those steps (NaN = diverged, never reaches the target).
        target: reached when value >= target (higher_is_better) or value <= target (otherwise).
        times: optional wall-clock seconds at those steps (training time, evaluation excluded).

    Returns:
        dict(reached, step, seconds): `step` is None and `seconds` is inf when the target is never
        reached (a miss counts as infinite time, as in AlgoPerf); `seconds` is None when no
        `times` were given.
    """
    s = list(steps)
    v = np.asarray(list(values), dtype=float)
    if len(s) != v.size:
        raise ValueError(f"steps and values must have the same length, got {len(s)} and {v.size}")
    if times is not None:
        times = list(times)
        if len(times) != len(s):
            raise ValueError(f"times must have one entry per step, got {len(times)} for {len(s)} steps")
    if any(b < a for a, b in zip(s, s[1:])):
        bad = next(i for i, (a, b) in enumerate(zip(s, s[1:])) if b < a)
        raise ValueError(f"steps must be non-decreasing, got step {s[bad + 1]} after {s[bad]}")
    hit = v >= target if higher_is_better else v <= target  # NaN compares False
    if not hit.any():
        return {"reached": False, "step": None, "seconds": math.inf if times is not None else None}
    i = int(np.argmax(hit))
    step = s[i]
    return {"reached": True, "step": int(step) if float(step).is_integer() else float(step),
            "seconds": float(times[i]) if times is not None else None}


def paired_wins(a: Sequence[float] | Mapping, b: Sequence[float] | Mapping,
                higher_is_better: bool = True) -> dict:
    """Seed-wise comparison of arm a against arm b: how many seeds a wins, loses and ties.

    Args:
        a, b: per-seed values, either two equal-length sequences in the same seed order or two
            mappings seed -> value (paired on the seeds both contain).
        higher_is_better: direction of the metric.

    A NaN (diverged) value loses against any number; two NaNs tie.

    Returns:
        dict(wins, losses, ties, n) from a's point of view.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        common = [k for k in a if k in b]
        pairs = [(float(a[k]), float(b[k])) for k in common]
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("a and b must both be sequences or both be mappings seed -> value")
    else:
        a, b = list(a), list(b)
        if len(a) != len(b):
            raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
        pairs = [(float(x), float(y)) for x, y in zip(a, b)]
    wins = losses = ties = 0
    sign = 1.0 if higher_is_better else -1.0
    for x, y in pairs:
        if math.isnan(x) and math.isnan(y):
            ties += 1
        elif math.isnan(x):
            losses += 1
        elif math.isnan(y):
            wins += 1
        elif sign * (x - y) > 0:
            wins += 1
        elif sign * (x - y) < 0:
            losses += 1
        else:
            ties += 1
    return {"wins": wins, "losses": losses, "ties": ties, "n": len(pairs)}
