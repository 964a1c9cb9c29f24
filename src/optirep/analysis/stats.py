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


# --------------------------------------------------------------------------------------------------
# Claim tests (optirep.report.claims): one-sided, effect-size-aware, failures as results.
# --------------------------------------------------------------------------------------------------

#: Seeds are shared across arms, so arms pair up; above this ratio of the arms' SDs (or with a failed
#: run in either arm) a rank test replaces the t test (issue #10, rule 4).
SD_RATIO_LIMIT = 4.0
#: A run whose accuracy ends within this distance of chance (1 / n_classes) has failed (rule 5).
CHANCE_MARGIN = 0.02


def failure_reason(final_metric: float, initial_loss: float, final_loss: float, chance: float | None = None,
                   chance_margin: float = CHANCE_MARGIN) -> str | None:
    """Why a run counts as failed, or None (issue #10, rule 5).

    A run has failed when its final loss or its tested quality metric is non-finite (it diverged), when
    its final train loss is above its first logged train loss (it got worse while training), or, for an
    accuracy metric with `chance` = 1 / n_classes, when its final accuracy is within `chance_margin` of
    chance (it learned nothing). Units: the metric's own (accuracy as a fraction).
    """
    fm, il, fl = float(final_metric), float(initial_loss), float(final_loss)
    if not math.isfinite(fm) or not math.isfinite(fl):
        return "non-finite loss or metric (diverged)"
    if math.isfinite(il) and fl > il:
        return f"final train loss {fl:.3g} above its initial {il:.3g}"
    if chance is not None and fm <= chance + chance_margin:
        return f"accuracy {fm:.3g} within {chance_margin:g} of chance ({chance:.3g})"
    return None


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    n = x.size
    if n < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return mean, mean
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sem
    return mean - half, mean + half


def _welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    w = welch(a, b, confidence)
    return w["ci_low"], w["ci_high"]


def effect_test(method: Sequence[float], baseline: Sequence[float], *, paired: bool = True,
                failed_method: Sequence[bool] | None = None, failed_baseline: Sequence[bool] | None = None,
                alpha: float = 0.05, sd_ratio_limit: float = SD_RATIO_LIMIT, n_resamples: int = 9999,
                random_state: int = 0, failed_low: bool = True) -> dict:
    """The oriented effect of method over baseline, its one-sided tests and its interval.

    Args:
        method, baseline: per-seed values, already *oriented* (larger = the claimed direction) and already
            on the scale of the test (e.g. log values for a ratio claim). Paired: same length, seed order.
            NaN marks a run without a value (diverged).
        paired: seeds pair up (same subset and initialisation in both arms).
        failed_method, failed_baseline: per-run failure flags (`failure_reason` is not None); a NaN value
            always counts as failed.
        failed_low: whether a failed run is the lowest value on the oriented scale (True when larger
            oriented values are better quality; False when the claim says the method is *worse*, e.g.
            "lower accuracy", where a failed run is the highest oriented value).
        alpha: one-sided level; the interval is the two-sided 1 - 2 alpha interval, whose ends are the
            one-sided 1 - alpha bounds the decision rule uses.

    Test choice (issue #10, rule 4; all from scipy.stats):
        * no failed run and SD ratio <= `sd_ratio_limit`: paired t (`ttest_rel`) on the per-seed
          differences, or Welch (`ttest_ind(equal_var=False)`) when unpaired; t interval.
        * otherwise a rank test, in which a failed run takes the worst rank: Wilcoxon signed-rank
          (`wilcoxon`, exact) on the paired differences (a failed method run loses its pair by more than
          any finite difference, a failed baseline run wins it, two failed runs tie), or exact
          Mann-Whitney U (`mannwhitneyu`) when unpaired (failed runs below every finite value).
          Its interval is a percentile bootstrap (`bootstrap`, fixed seed) of the mean difference with a
          failed run's missing value replaced by the worst value observed in either arm.

    Returns:
        dict(test, paired, rank_based, estimate, ci_low, ci_high, n_method, n_baseline, n_failed_method,
        n_failed_baseline, sd_ratio, sd_diff (SD of the per-seed differences; unpaired: sqrt(var_a + var_b),
        the paired SD with the same standard error), p_greater (H0: effect <= 0), p_less (H0: effect >= 0)).
        `p_shifted(result, shift, alternative)` gives the p values against other bounds (TOST).
    """
    a = np.asarray(list(method), dtype=float)
    b = np.asarray(list(baseline), dtype=float)
    fa = np.isnan(a) | (np.asarray(list(failed_method), dtype=bool) if failed_method is not None else False)
    fb = np.isnan(b) | (np.asarray(list(failed_baseline), dtype=bool) if failed_baseline is not None else False)
    if paired and a.size != b.size:
        raise ValueError(f"paired arms need equal lengths, got {a.size} and {b.size}")
    finite = np.concatenate([a[~np.isnan(a)], b[~np.isnan(b)]])
    worst = (float(finite.min()) if failed_low else float(finite.max())) if finite.size else math.nan
    a_sub, b_sub = np.where(np.isnan(a), worst, a), np.where(np.isnan(b), worst, b)
    sa = float(np.std(a[~fa], ddof=1)) if (~fa).sum() > 1 else math.nan
    sb = float(np.std(b[~fb], ddof=1)) if (~fb).sum() > 1 else math.nan
    lo_sd, hi_sd = min(sa, sb), max(sa, sb)
    sd_ratio = (hi_sd / lo_sd if lo_sd > 0 else (math.inf if hi_sd > 0 else 1.0)) if math.isfinite(lo_sd) else math.nan
    rank = bool(fa.any() or fb.any() or (math.isfinite(sd_ratio) and sd_ratio > sd_ratio_limit))
    out = {"paired": bool(paired), "n_method": int(a.size), "n_baseline": int(b.size),
           "n_failed_method": int(fa.sum()), "n_failed_baseline": int(fb.sum()), "sd_ratio": sd_ratio,
           "rank_based": rank, "alpha": alpha, "failed_low": bool(failed_low)}
    if paired:
        d = a_sub - b_sub
        out["estimate"] = float(d.mean()) if d.size else math.nan
        out["sd_diff"] = float(d.std(ddof=1)) if d.size > 1 else math.nan
    else:
        out["estimate"] = float(a_sub.mean() - b_sub.mean()) if a.size and b.size else math.nan
        # the SD a paired design with the same standard error would have (for the power analysis)
        out["sd_diff"] = (float(math.sqrt(a_sub.var(ddof=1) + b_sub.var(ddof=1)))
                          if a.size > 1 and b.size > 1 else math.nan)
    if a.size < 2 or b.size < 2:
        out.update(test="too few runs", ci_low=math.nan, ci_high=math.nan, p_greater=math.nan, p_less=math.nan)
        return out
    conf = 1 - 2 * alpha
    if not rank:
        out["test"] = "paired t" if paired else "Welch t"
        out["ci_low"], out["ci_high"] = _t_interval(a - b, conf) if paired else _welch_interval(a, b, conf)
    else:
        out["test"] = "Wilcoxon signed-rank (exact)" if paired else "Mann-Whitney U (exact)"
        data = (a_sub - b_sub,) if paired else (a_sub, b_sub)
        stat = (lambda x, axis=-1: np.mean(x, axis=axis)) if paired else \
            (lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis))
        if np.ptp(np.concatenate(data)) == 0 and paired:
            out["ci_low"] = out["ci_high"] = out["estimate"]
        else:
            res = st.bootstrap(data, stat, paired=False, confidence_level=conf, method="percentile",
                               n_resamples=n_resamples, random_state=np.random.default_rng(random_state))
            out["ci_low"], out["ci_high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out["_data"] = (a, b, fa, fb)
    out["p_greater"] = p_shifted(out, 0.0, "greater")
    out["p_less"] = p_shifted(out, 0.0, "less")
    return out


def p_shifted(res: dict, shift: float, alternative: str) -> float:
    """One-sided p value of the test `effect_test` chose, against H0: effect <= shift ("greater") or
    effect >= shift ("less"), in the oriented units of `res`. TOST and non-inferiority use shifts."""
    if "_data" not in res:
        return math.nan
    a, b, fa, fb = res["_data"]
    if not res["rank_based"]:
        if res["paired"]:
            d = a - b - shift
            if np.all(d == d[0]):
                return 0.0 if (d[0] > 0) == (alternative == "greater") and d[0] != 0 else 1.0
            return float(st.ttest_1samp(d, 0.0, alternative=alternative).pvalue)
        x = a - shift
        if np.var(x) == 0 and np.var(b) == 0:
            diff = x.mean() - b.mean()
            return 0.0 if diff != 0 and (diff > 0) == (alternative == "greater") else 1.0
        return float(st.ttest_ind(x, b, equal_var=False, alternative=alternative).pvalue)
    if res["paired"]:
        d = a - b - shift
        big = (np.nanmax(np.abs(d)) if np.isfinite(d).any() else 1.0) * 2 + 1.0
        low = -big if res.get("failed_low", True) else big
        d = np.where(fa & fb, 0.0, np.where(fa, low, np.where(fb, -low, d)))
        if np.all(d == 0):
            return 1.0
        return float(st.wilcoxon(d, alternative=alternative, method="exact", zero_method="wilcox").pvalue)
    x, y = a - shift, b.copy()
    finite = np.concatenate([x[~fa], y[~fb]])
    low = ((finite.min() - 1.0) if res.get("failed_low", True) else (finite.max() + 1.0)) if finite.size else 0.0
    x, y = np.where(fa, low, x), np.where(fb, low, y)
    return float(st.mannwhitneyu(x, y, alternative=alternative, method="exact").pvalue)


def public(res: dict) -> dict:
    """`effect_test`'s result without its private data (JSON-ready)."""
    return {k: v for k, v in res.items() if not k.startswith("_")}


def difference_of_differences(d_a: Sequence[float], d_b: Sequence[float], alpha: float = 0.05) -> dict:
    """Interaction: mean(d_a) - mean(d_b) of two sets of per-seed (oriented) differences.

    The two sets come from different tasks (independent data), so the test is Welch's t on them
    (`scipy.stats.ttest_ind(equal_var=False)`), or exact Mann-Whitney U when a value is NaN (a failed
    run: its difference is the worst) or the SD ratio exceeds SD_RATIO_LIMIT. Same return shape as
    `effect_test` (unpaired), with d_a as "method" and d_b as "baseline".
    """
    return effect_test(d_a, d_b, paired=False, alpha=alpha)


def t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the one-sided one-sample (paired) t test at level alpha to detect `effect` with
    per-seed SD `sd` from n pairs: P(T' > t_{1-alpha, n-1}) with T' ~ noncentral t(n-1, effect sqrt(n)/sd)
    (`scipy.stats.nct`)."""
    if n < 2 or not (sd > 0) or not math.isfinite(effect):
        return math.nan
    df = n - 1
    return float(st.nct.sf(st.t.ppf(1 - alpha, df), df, effect * math.sqrt(n) / sd))


def power_analysis(sd: float, n: int, sesoi: float, alpha: float = 0.05, power: float = 0.8,
                   n_max: int = 100000) -> dict:
    """Minimum detectable effect at n pairs and the n needed for the SESOI (one-sided paired t).

    Args:
        sd: SD of the per-seed differences (a pilot's or this study's), in the effect's units.
        n: planned pairs (seeds per arm). sesoi: smallest effect of interest (> 0).
    Returns:
        dict(sd, n, alpha, power, mde, n_needed): `mde` is the smallest effect reaching `power` at n
        (root of `t_power`, scipy.optimize.brentq), `n_needed` the smallest n reaching `power` at the
        SESOI (None beyond n_max). NaN / None where sd is not a positive number.
    """
    from scipy.optimize import brentq

    out = {"sd": sd, "n": n, "alpha": alpha, "power": power, "sesoi": sesoi, "mde": math.nan, "n_needed": None}
    if not (math.isfinite(sd) and sd > 0) or n < 2:
        if math.isfinite(sd) and sd == 0:
            out.update(mde=0.0, n_needed=2)
        return out
    hi = sd
    while t_power(hi, sd, n, alpha) < power:
        hi *= 2
    out["mde"] = float(brentq(lambda e: t_power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * hi))
    if sesoi > 0 and math.isfinite(sesoi):
        lo_n, hi_n = 2, 2
        while t_power(sesoi, sd, hi_n, alpha) < power:
            lo_n, hi_n = hi_n, hi_n * 2
            if hi_n > n_max:
                return out
        while lo_n < hi_n:  # smallest n with enough power (power grows with n)
            mid = (lo_n + hi_n) // 2
            if t_power(sesoi, sd, mid, alpha) >= power:
                hi_n = mid
            else:
                lo_n = mid + 1
        out["n_needed"] = int(hi_n)
    return out


def min_attainable_p(n: int, test: str) -> float:
    """Smallest one-sided p value an exact rank test can give with n runs per arm (n pairs):
    1 / 2^n for the signed-rank test, 1 / C(2n, n) for Mann-Whitney; 0 for t tests."""
    if "Wilcoxon" in test:
        return 1.0 / 2 ** n
    if "Mann-Whitney" in test:
        return 1.0 / math.comb(2 * n, n)
    return 0.0
