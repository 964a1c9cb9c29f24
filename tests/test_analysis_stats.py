"""Statistics against hand-computed values, scipy, and a textbook Holm example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from optirep.analysis.stats import holm, hedges_g, paired_wins, summarize, time_to_target, welch


def test_summarize_hand_computed():
    out = summarize([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)  # sum of squared deviations 5, ddof 1
    half = 3.1824463052837078 * std / 2  # t_{0.975, 3} * sem
    assert out["n"] == 4 and out["n_nan"] == 0
    assert out["mean"] == pytest.approx(2.5)
    assert out["std"] == pytest.approx(std)
    assert out["sem"] == pytest.approx(std / 2)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2.5 - half, 2.5 + half))


def test_summarize_ignores_nan_but_counts_it():
    out = summarize([1.0, float("nan"), 2.0, 3.0, 4.0, float("nan")])
    assert out["n"] == 4 and out["n_nan"] == 2
    assert out["mean"] == pytest.approx(2.5)
    assert out["std"] == pytest.approx(math.sqrt(5 / 3))


def test_summarize_small_and_degenerate_samples():
    one = summarize([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert all(math.isnan(one[k]) for k in ("std", "sem", "ci_low", "ci_high"))
    none = summarize([float("nan")])
    assert none["n"] == 0 and none["n_nan"] == 1 and math.isnan(none["mean"])
    const = summarize([0.5, 0.5, 0.5])
    assert (const["std"], const["ci_low"], const["ci_high"]) == (0.0, 0.5, 0.5)
    miss = summarize([10.0, math.inf])
    assert miss["mean"] == math.inf and math.isnan(miss["std"])


def test_welch_hand_computed_and_matches_scipy():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    out = welch(a, b)
    # var_a/n_a = 1/3, var_b/n_b = 4/3, se^2 = 5/3
    assert out["diff"] == -4.0
    assert out["t"] == pytest.approx(-4 / math.sqrt(5 / 3))
    assert out["df"] == pytest.approx((5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2))
    ref = st.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["df"] == pytest.approx(ref.df, rel=1e-10)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert out["degenerate"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy_on_unequal_sizes(seed):
    g = np.random.default_rng(seed)
    a, b = g.normal(0.7, 0.02, 5), g.normal(0.69, 0.05, 8)
    out, ref = welch(a, b), st.ttest_ind(a, b, equal_var=False)
    assert (out["t"], out["p"], out["df"]) == pytest.approx((ref.statistic, ref.pvalue, ref.df), rel=1e-10)


def test_welch_drops_nan_and_handles_degenerate_cases():
    out = welch([1.0, 2.0, 3.0, float("nan")], [4.0, 6.0, 8.0])
    assert out["n_a"] == 3 and out["n_nan_a"] == 1
    assert out["p"] == pytest.approx(welch([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])["p"])

    few = welch([1.0], [2.0, 3.0])
    assert few["degenerate"] == "too_few" and few["diff"] == -1.5
    assert all(math.isnan(few[k]) for k in ("t", "df", "p", "ci_low", "ci_high"))

    same = welch([1.0, 1.0], [1.0, 1.0, 1.0])
    assert same["degenerate"] == "zero_variance" and (same["t"], same["p"]) == (0.0, 1.0)
    apart = welch([1.0, 1.0], [0.5, 0.5])
    assert (apart["t"], apart["p"], apart["ci_low"], apart["ci_high"]) == (math.inf, 0.0, 0.5, 0.5)
    assert math.isnan(apart["df"])


def test_holm_textbook_example():
    # Wikipedia "Holm-Bonferroni method": p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects
    # H1 and H4 only. Sorted: 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06).
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p <= 0.05 for p in adj] == [True, False, False, True]


def test_holm_caps_at_one_is_monotone_and_passes_nan_through():
    raw = [0.5, float("nan"), 0.2, 0.01]
    adj = holm(raw)
    assert math.isnan(adj[1])
    # m = 3 (the NaN is not a test): 3*0.01, 2*0.2, max(1*0.5, 0.4)
    assert [adj[3], adj[2], adj[0]] == pytest.approx([0.03, 0.4, 0.5])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []
    g = np.random.default_rng(0).uniform(size=20)
    a = np.asarray(holm(g))
    order = np.argsort(g)
    assert np.all(np.diff(a[order]) >= 0) and np.all(a >= g) and np.all(a <= 1)
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\], got \[1.5\]"):
        holm([0.1, 1.5])


def test_hedges_g_hand_computed():
    # pooled var = (2*1 + 2*4) / 4 = 2.5; d = -4 / sqrt(2.5); J(4) = Gamma(2) / (sqrt(2) Gamma(1.5))
    j = 1.0 / (math.sqrt(2) * math.gamma(1.5))
    assert hedges_g([1.0, 2.0, 3.0], [4.0, 6.0, 8.0]) == pytest.approx(j * -4 / math.sqrt(2.5))
    assert j == pytest.approx(1 - 3 / (4 * 4 - 1), abs=3e-3)  # the usual approximation
    g = np.random.default_rng(1)
    a, b = g.normal(1, 1, 30), g.normal(0, 1, 30)
    d = (a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert hedges_g(a, b) == pytest.approx(d * (1 - 3 / (4 * 58 - 1)), rel=1e-4)
    assert hedges_g(b, a) == pytest.approx(-hedges_g(a, b))


def test_hedges_g_degenerate():
    assert math.isnan(hedges_g([1.0], [2.0]))
    assert math.isnan(hedges_g([], [1.0, 2.0, 3.0]))
    assert hedges_g([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert hedges_g([2.0, 2.0], [1.0, 1.0]) == math.inf


def test_time_to_target():
    steps, acc = [0, 10, 20, 30], [0.1, 0.5, 0.7, 0.9]
    assert time_to_target(steps, acc, 0.6) == {"reached": True, "step": 20, "seconds": None}
    assert time_to_target(steps, acc, 0.7, times=[0.0, 1.5, 3.0, 4.5]) == {
        "reached": True, "step": 20, "seconds": 3.0}
    assert time_to_target(steps, acc, 0.95, times=[0, 1, 2, 3]) == {
        "reached": False, "step": None, "seconds": math.inf}
    ppl = [300.0, 120.0, float("nan"), 80.0]
    assert time_to_target(steps, ppl, 100.0, higher_is_better=False)["step"] == 30
    assert time_to_target(steps, [float("nan")] * 4, 0.0)["reached"] is False
    with pytest.raises(ValueError, match="steps and values must have the same length, got 4 and 3"):
        time_to_target(steps, acc[:3], 0.5)
    assert time_to_target([0, 10, 10, 20], [0.1, 0.6, 0.7, 0.8], 0.65)["step"] == 10
    with pytest.raises(ValueError, match="steps must be non-decreasing, got step 10 after 20"):
        time_to_target([0, 20, 10, 30], acc, 0.5)


def test_paired_wins():
    a, b = [0.9, 0.8, 0.7, 0.6], [0.85, 0.8, 0.75, float("nan")]
    assert paired_wins(a, b) == {"wins": 2, "losses": 1, "ties": 1, "n": 4}
    # lower is better flips seeds 0 and 2, but b's diverged seed 3 stays a's win
    assert paired_wins(a, b, higher_is_better=False) == {"wins": 2, "losses": 1, "ties": 1, "n": 4}
    assert paired_wins(a[:3], b[:3], higher_is_better=False) == {"wins": 1, "losses": 1, "ties": 1, "n": 3}
    by_seed = paired_wins({0: 1.0, 1: 2.0, 2: 3.0}, {1: 1.0, 2: 4.0, 3: 0.0})
    assert by_seed == {"wins": 1, "losses": 1, "ties": 0, "n": 2}
    with pytest.raises(ValueError, match="paired values need equal lengths, got 2 and 1"):
        paired_wins([1.0, 2.0], [1.0])
