"""claims.yaml validity and coverage, and every rule of optirep claims (issue #10) on synthetic aggregates
whose right verdict is known by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from optirep.report import aggregate, claims
from test_report_fixture import build_tree

REPO = Path(__file__).resolve().parents[1]

# Every claim id of the seeds specification: its master table (section 5) and sections 1(e)-4(e).
SPEC_IDS = (
    [f"V6-{i}" for i in range(1, 14)] + [f"GRN-{i}" for i in range(1, 5)]
    + [f"PW-{i}" for i in range(1, 5)] + [f"NP-{i}" for i in range(1, 7)]
)


def test_repo_claims_file_validates_and_covers_every_spec_claim():
    doc = claims.load_claims(REPO / "experiments" / "claims.yaml")
    ids = [c["id"] for c in doc["claims"]]
    assert sorted(ids) == sorted(SPEC_IDS)
    for c in doc["claims"]:
        assert ("test" in c) + ("not_run" in c) + ("derived_from" in c) == 1, c["id"]
        if "test" in c:
            assert c["test"]["experiment"] in {"cpu_shakespeare", "cpu_neuroplastic_fmnist", "cpu_enhanced_sgd_mnist",
                                               "cpu_vision_fmnist", "cpu_planeswalker_fmnist", "smoke"}, c["id"]
            # rule 1: the claimed effect is pre-registered where the seed gives a number
            sv = c.get("seed_value") or {}
            if "baseline" in sv and "method" in sv and c["direction"] in ("higher", "lower"):
                assert "claimed" in c, c["id"]


def _claim(**over):
    c = {"id": "V6-1", "optimizer": "V6", "statement": "s", "seed_value": {"baseline": 1.0, "method": 1.1, "text": "t"},
         "metric": "acc", "direction": "higher", "setup": "s", "source": "a/b @ 1 : c.py",
         "test": {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "final_test"}}
    c.update(over)
    return c


def _without_test(**over):
    c = _claim(**over)
    del c["test"]
    return c


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(direction="up"), r"claim V6-1 .*allowed values: higher, lower, equal, not_worse"),
    (lambda c: c.update(not_run="x"), "needs exactly one of `test`, `not_run`, `derived_from`"),
    (lambda c: c["test"].pop("metric"), "'metric' is a required property"),
    (lambda c: c.update(colour="red"), r"allowed keys: .*direction"),
    (lambda c: c.update(claimed={"carry": "percent"}), r"claim V6-1 \(claims.0.claimed.carry\).*allowed values: error_reduction"),
    (lambda c: c.update(claimed={"carry": "ratio"}, seed_value={"text": "x"}),
     r"claim V6-1 \(claimed\): needs `claimed.effect` or both seed numbers"),
    (lambda c: c.update(sesoi={"fraction": 0.5}), r"claim V6-1 \(sesoi.fraction\): a fraction of the claimed effect needs `claimed`"),
    (lambda c: c.update(direction="equal", interaction={"task": "t2", "why": "w"}), r"claim V6-1 \(interaction\): only for"),
    (lambda c: c.update(replication={"method": "a"}), r"claim V6-1 \(claims.0.replication\): 'baseline' is a required"),
    (lambda c: c.update(gates=[{"baseline_max": 0.9}]), r"claim V6-1 \(claims.0.gates.0\): 'why' is a required"),
    (lambda c: c["test"].update(source="csv"), r"claims.0.test.source.*allowed values: aggregate"),
])
def test_schema_errors_name_the_claim_and_the_field(mutate, message):
    c = _claim()
    mutate(c)
    with pytest.raises(claims.ClaimsError, match=message):
        claims.validate_claims({"version": 1, "claims": [c]})


def test_measured_only_keys_on_a_not_run_claim_are_named():
    c = _without_test(not_run="no data", lr_control={"method": "a", "baseline": "b"})
    with pytest.raises(claims.ClaimsError, match=r"claim V6-1 \(lr_control\): only a claim with a `test` or `full_scale` block"):
        claims.validate_claims({"version": 1, "claims": [c]})


def test_duplicate_ids_and_unknown_derived_refs_are_errors():
    doc = {"version": 1, "claims": [_claim(), _claim(), _without_test(id="V6-13", derived_from=["V6-99"])]}
    with pytest.raises(claims.ClaimsError) as err:
        claims.validate_claims(doc)
    assert "V6-1: id used 2 times" in str(err.value) and "unknown claim 'V6-99'" in str(err.value)


# ------------------------------------------------------------------------------------ rule 3: decide
@pytest.mark.parametrize("direction, est, ci, p, sesoi, claimed, expected", [
    ("higher", 0.05, (0.02, 0.08), 0.01, 0.01, 0.04, "replicated"),
    ("higher", 0.005, (0.003, 0.007), 0.001, 0.02, 0.04, "not replicated"),   # significant, far smaller
    ("higher", 0.015, (0.003, 0.05), 0.01, 0.02, 0.04, "replicated"),         # below SESOI but contains the claim
    ("higher", 0.015, (0.003, 0.03), 0.01, 0.02, 0.04, "inconclusive"),       # significant, small, SESOI not excluded
    ("higher", -0.05, (-0.08, -0.02), 0.99, 0.01, 0.04, "not replicated"),   # opposite direction
    ("higher", 0.01, (-0.03, 0.05), 0.5, 0.01, 0.04, "inconclusive"),
    ("equal", 0.001, (-0.004, 0.006), 0.01, 0.01, math.nan, "replicated"),
    ("equal", 0.05, (0.03, 0.07), 0.99, 0.01, math.nan, "not replicated"),
    ("equal", 0.01, (-0.02, 0.04), 0.4, 0.01, math.nan, "inconclusive"),
    ("not_worse", 0.0, (-0.005, 0.005), 0.01, 0.01, math.nan, "replicated"),
    ("not_worse", -0.05, (-0.07, -0.03), 0.99, 0.01, math.nan, "not replicated"),
    ("higher", math.nan, (math.nan, math.nan), math.nan, 0.01, 0.04, "inconclusive"),
])
def test_decide_rules(direction, est, ci, p, sesoi, claimed, expected):
    verdict, why = claims.decide(direction, est, ci, p, sesoi, claimed)
    assert verdict == expected, why


# ------------------------------------------------------------------------------------ synthetic aggregates
def _label(values, *, seeds=None, first_loss=2.3, final_loss=0.3, sha="abc", tuned=False, extra=None,
           failed_loss=None):
    n = len(values)
    seeds = seeds or list(range(n))
    final = [final_loss] * n if failed_loss is None else failed_loss
    vals = {"final_test": list(values), "final_train_loss": final, **(extra or {})}
    return {"seeds": seeds, "n_runs": n, "n_diverged": sum(1 for v in values if v is None or v != v),
            "values": vals, "stats": {}, "git_sha": sha, "hp": {},
            "curves": [{"seed": s, "step": [1, 2], "train_loss": [first_loss, final[i]]} for i, s in enumerate(seeds)],
            "tuning": {"trials": [{}] * 4} if tuned else None}


def write_agg(root: Path, exp: str, task: str, labels: dict, metric="accuracy", dataset="digits32",
              gate_passed=True, seeds=None):
    hib = metric == "accuracy"
    agg = {"experiment": exp, "scale": "reduced scale, CPU", "task": task, "dataset": dataset, "metric": metric,
           "higher_is_better": hib, "seeds": seeds or list(range(len(next(iter(labels.values()))["seeds"]))),
           "gate": {"reason": "passed" if gate_passed else "mean final_test 0.1 < min 0.5"},
           "gate_passed": gate_passed, "per_label": labels}
    p = root / "results" / exp / "aggregate" / f"{task}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(agg))
    return p


def _t(**over):
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "final_test"}
    t.update(over)
    return t


def _eval(root, *cs, **kw):
    doc = claims.validate_claims({"version": 1, "claims": list(cs)})
    out = claims.evaluate(doc, root / "results", **kw)
    return out, {r["id"]: r for r in out["claims"]}


BASE = [0.800, 0.812, 0.795, 0.806, 0.790]  # quantum 1/1000


def test_significant_effect_far_smaller_than_claimed_is_not_replicated(tmp_path):
    # claimed: +10 pp (absolute carry); measured: a consistent +0.4 pp. Significant, but the upper bound
    # (~+0.5 pp) excludes the SESOI (5 pp): the old rule said "replicated".
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label([b + 0.004 + d for b, d in
                                                                               zip(BASE, [0, .001, -.001, 0, .001])])})
    c = _claim(claimed={"carry": "absolute", "effect": 0.10}, replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert q["test"] == "paired t" and q["p_primary"] < 0.001
    assert q["claimed_effect"] == pytest.approx(0.10) and q["sesoi"] == pytest.approx(0.05)
    assert r["V6-1"]["verdict"] == "not replicated" and "far smaller" in r["V6-1"]["why"]
    # two questions, each with its own verdict
    assert r["V6-1"]["replication_verdict"] == "not replicated"


def test_complete_separation_with_bimodal_spread_uses_a_rank_test(tmp_path):
    # GRN-3 shape: the method is below the baseline in every seed, in two clusters (two runs near the
    # baseline, three collapsed to chance with exploding loss). Welch would see a huge SD; the rank test
    # puts the failed runs at the worst rank, and the interval excludes any gain.
    base = [0.931, 0.953, 0.952, 0.951, 0.958]
    meth = [0.911, 0.922, 0.112, 0.101, 0.100]
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(base),
                                         "bio": _label(meth, failed_loss=[0.2, 0.2, 1e31, 1e28, 1e26])})
    c = _without_test(seed_value={"text": "no number"})
    c["test"] = _t()
    c["replication"] = {"method": "bio", "baseline": "adamw"}
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert q["n_method_failed"] == 3 and q["n_baseline_failed"] == 0 and len(q["method_failures"]) == 3
    assert q["test"] == "Wilcoxon signed-rank (exact)" and q["rank_based"]
    assert q["paired_wins"]["losses"] == 5
    assert r["V6-1"]["verdict"] == "not replicated" and "opposite" in r["V6-1"]["why"]


def test_parity_claim_uses_tost(tmp_path):
    base = [0.800, 0.812, 0.795, 0.806, 0.790]
    same = [b + d for b, d in zip(base, [0.001, -0.001, 0.0, 0.001, -0.001])]
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(base), "bio": _label(same),
                                         "far": _label([b + 0.05 + d for b, d in zip(base, [0, .001, -.001, 0, .002])])})
    eq = _without_test(id="NP-5", direction="equal", seed_value={"text": "qualitative"}, sesoi={"relative": 0.01})
    eq["test"] = _t()
    eq["replication"] = {"method": "far", "baseline": "adamw"}
    out, r = _eval(tmp_path, eq)
    q = r["NP-5"]["questions"]
    assert "TOST" in q["attribution"]["p_kind"] and q["attribution"]["verdict"] == "replicated"
    assert q["replication"]["verdict"] == "not replicated" and "outside" in q["replication"]["why"]


def test_interaction_is_a_difference_of_differences(tmp_path):
    # "gains grow with less data": gain +1 pp on the full task, +3 pp on the reduced task -> DoD +2 pp.
    noise = [0.0, 0.002, -0.002, 0.001, -0.001]
    full_b = [0.900, 0.905, 0.895, 0.902, 0.898]
    red_b = [0.700, 0.710, 0.690, 0.705, 0.695]
    write_agg(tmp_path, "synth", "full", {"adamw": _label(full_b), "bio": _label([b + 0.01 + e for b, e in zip(full_b, noise)]),
                                          "bio2": _label([b + 0.03 for b in full_b])})
    write_agg(tmp_path, "synth", "small", {"adamw": _label(red_b), "bio": _label([b + 0.03 - e for b, e in zip(red_b, noise)]),
                                           "bio2": _label([b + 0.005 for b in red_b])})
    c = _without_test(id="NP-3", seed_value={"text": "not in the repo"})
    c["test"] = _t(task="small")
    c["interaction"] = {"task": "full", "why": "gain at 10% minus gain at 100%"}
    c["replication"] = {"method": "bio2", "baseline": "adamw"}
    out, r = _eval(tmp_path, c)
    q = r["NP-3"]["questions"]["attribution"]
    assert q["estimate"] == pytest.approx(0.02, abs=1e-9)
    assert q["main_effect"] == pytest.approx(0.03, abs=1e-9) and q["other_effect"] == pytest.approx(0.01, abs=1e-9)
    assert q["test"] == "Welch t" and q["ci_low"] < 0.02 < q["ci_high"]
    assert r["NP-3"]["verdict"] == "replicated (direction only)"
    # bio2: a larger gain on the full data -> the interaction is negative
    rep = r["NP-3"]["questions"]["replication"]
    assert rep["estimate"] == pytest.approx(0.005 - 0.03, abs=1e-9) and rep["verdict"] == "not replicated"


def test_a_run_at_chance_is_a_failure_counted_per_arm(tmp_path):
    # Loss went down, finite, but 0.11 accuracy on 10 classes is within 2 pp of chance.
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label([0.85, 0.86, 0.11, 0.84, 0.85])})
    c = _claim(claimed={"carry": "absolute", "effect": 0.05}, replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert q["n_method_failed"] == 1 and "chance" in q["method_failures"][0]
    assert q["rank_based"] and q["test"].startswith("Wilcoxon")


def test_failure_rules():
    from optirep.analysis.stats import failure_reason
    assert failure_reason(float("nan"), 2.3, 0.1) and "non-finite" in failure_reason(0.9, 2.3, float("inf"))
    assert "above its initial" in failure_reason(0.5, 2.3, 2.5)
    assert "chance" in failure_reason(0.115, 2.3, 1.0, chance=0.1)
    assert failure_reason(0.125, 2.3, 1.0, chance=0.1) is None
    assert failure_reason(300.0, 8.7, 5.4) is None  # perplexity: no chance level


def test_final_loss_above_initial_fails_and_a_lower_claim_ranks_it_worst(tmp_path):
    # GRN-2 shape: the claim says the method is *lower*; a failed method run is the worst accuracy, so it
    # counts for that claim, not against it.
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE),
                                         "bio": _label([0.70, 0.71, 0.69, 0.40, 0.70], failed_loss=[.3, .3, .3, 2.9, .3])})
    c = _without_test(direction="lower", seed_value={"text": "below"})
    c["test"] = _t()
    c["replication"] = {"method": "bio", "baseline": "adamw"}
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert q["n_method_failed"] == 1 and "above its initial" in q["method_failures"][0]
    assert q["failed_low"] is False and q["estimate"] > 0 and q["p_primary"] == pytest.approx(1 / 32)


def test_one_holm_family_across_the_study_and_descriptive_secondaries(tmp_path):
    for task, gain in (("a", 0.05), ("b", 0.05), ("c", 0.0)):
        write_agg(tmp_path, "synth", task, {"adamw": _label(BASE), "bio": _label([x + gain + d for x, d in
                                                                                  zip(BASE, [0, .002, -.002, .001, 0])])})
    cs = [_claim(id=f"V6-{i}", claimed={"carry": "absolute", "effect": 0.05}, test=_t(task=t),
                 replication={"method": "bio", "baseline": "adamw"}) for i, t in enumerate("abc", 1)]
    out, r = _eval(tmp_path, *cs)
    assert out["holm_family_size"] == 3
    for cid in ("V6-1", "V6-2", "V6-3"):
        q = r[cid]["questions"]
        assert q["attribution"]["family_size"] == 3 and q["attribution"]["p_holm"] >= q["attribution"]["p_primary"]
        assert "p_holm" not in q["replication"]  # question (a) is per claim
    from optirep.analysis.stats import holm
    ids = ("V6-1", "V6-2", "V6-3")
    raw = [r[c]["questions"]["attribution"]["p_primary"] for c in ids]
    assert [r[c]["questions"]["attribution"]["p_holm"] for c in ids] == pytest.approx(holm(raw))
    assert r["V6-1"]["verdict"] == "replicated" and r["V6-3"]["verdict"] == "not replicated"


def test_untestable_at_this_scale_with_the_numbers(tmp_path):
    rng = np.random.default_rng(0)
    base = list(np.round(0.8 + 0.03 * rng.standard_normal(5), 3))
    meth = list(np.round(np.array(base) + 0.03 * rng.standard_normal(5), 3))
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(base), "bio": _label(meth)})
    c = _claim(claimed={"carry": "absolute", "effect": 0.006}, replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert r["V6-1"]["verdict"] == "untestable at this scale"
    assert q["power"]["n_needed"] > 20 and "seeds per arm needed" in r["V6-1"]["why"]
    assert q["power"]["mde"] > q["sesoi"]


def test_power_analysis_matches_the_textbook_value():
    from optirep.analysis.stats import power_analysis, t_power
    # One-sided one-sample t, d = 1, alpha 0.05, power 0.8: n = 8 (power 0.82; n = 7: 0.77).
    pa = power_analysis(sd=1.0, n=8, sesoi=1.0)
    assert pa["n_needed"] == 8 and t_power(1.0, 1.0, 7) < 0.8 < t_power(1.0, 1.0, 8)
    assert pa["mde"] < 1.0 and t_power(pa["mde"], 1.0, 8) == pytest.approx(0.8, abs=1e-9)


def test_proxy_gates_resolution_and_declared(tmp_path):
    # Accuracy on 50 test examples (quantum 0.02) against a SESOI of 0.005: not testable on this proxy.
    base = [0.80, 0.82, 0.78, 0.80, 0.84]
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(base), "bio": _label([0.82, 0.82, 0.80, 0.80, 0.84])})
    c = _claim(claimed={"carry": "absolute", "effect": 0.01}, replication={"method": "bio", "baseline": "adamw"})
    gated = _claim(id="V6-2", claimed={"carry": "absolute", "effect": 0.01},
                   replication={"method": "bio", "baseline": "adamw"},
                   gates=[{"baseline_max": 0.7, "why": "the seed's baseline is at 69%"}])
    out, r = _eval(tmp_path, c, gated)
    assert r["V6-1"]["verdict"] == "not tested (proxy invalid)" and "1/50" in r["V6-1"]["why"]
    assert r["V6-2"]["verdict"] == "not tested (proxy invalid)" and "69%" in r["V6-2"]["why"]
    assert out["holm_family_size"] == 0


def test_deterministic_quantity_is_an_exact_ratio_outside_holm(tmp_path):
    write_agg(tmp_path, "synth", "clf", {
        "adamw": _label(BASE, extra={"optimizer_state_bytes": [2000] * 5}),
        "bio": _label(BASE, extra={"optimizer_state_bytes": [4000] * 5})})
    c = _claim(id="V6-11", seed_value={"baseline": 1.0, "method": 1.9, "text": "~1.9x"}, claimed={"carry": "ratio"},
               deterministic=True, test=_t(metric="optimizer_state_bytes"), replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c)
    q = r["V6-11"]["questions"]["attribution"]
    assert q["test"] == "exact ratio (deterministic)" and "p_holm" not in q and out["holm_family_size"] == 0
    assert r["V6-11"]["verdict"] == "replicated" and "exact ratio 2x" in r["V6-11"]["why"]


def test_ratio_claims_and_wins_follow_the_metric_direction(tmp_path):
    # Step time (lower is better): the method is slower in every seed -> 0 wins for it; a train
    # perplexity claim (lower) where the method is lower in every seed -> 5 wins.
    extra_b = {"time_per_step_s": [0.10, 0.11, 0.10, 0.12, 0.10], "extra.train_ppl": [17.0, 17.5, 17.2, 17.1, 17.3]}
    extra_m = {"time_per_step_s": [0.17, 0.18, 0.17, 0.19, 0.17], "extra.train_ppl": [13.0, 13.4, 13.1, 13.2, 13.3]}
    write_agg(tmp_path, "synth", "lm", {"adamw": _label([300.0] * 5, extra=extra_b, first_loss=8.0, final_loss=5.0),
                                        "bio": _label([290.0] * 5, extra=extra_m, first_loss=8.0, final_loss=5.0)},
              metric="perplexity", dataset="tinyshakespeare")
    cost = _claim(id="V6-2", seed_value={"baseline": 1.0, "method": 1.67, "text": "+67%"}, claimed={"carry": "ratio"},
                  test=_t(task="lm", metric="time_per_step_s"), replication={"method": "bio", "baseline": "adamw"})
    ppl = _claim(id="V6-5", direction="lower", seed_value={"baseline": 17.39, "method": 13.27, "text": "-23.7%"},
                 claimed={"carry": "ratio"}, test=_t(task="lm", metric="extra.train_ppl"),
                 replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, cost, ppl)
    t = r["V6-2"]["questions"]["attribution"]
    assert t["paired_wins"]["wins"] == 0 and t["wins_orientation"] == "the metric's better direction"
    assert t["effect_scale"] == "log ratio" and t["claimed_effect"] == pytest.approx(math.log(1.67))
    assert r["V6-2"]["verdict"] == "replicated"
    assert r["V6-5"]["questions"]["attribution"]["paired_wins"]["wins"] == 5
    assert r["V6-5"]["verdict"] == "replicated"


def test_lr_matched_control_can_overturn_attribution_and_provenance_is_flagged(tmp_path):
    gain = [b + 0.05 + d for b, d in zip(BASE, [0, .002, -.002, .001, 0])]
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE, sha="aaa1111"), "bio": _label(gain, sha="bbb2222-dirty"),
                                         "adamw_lr": _label(gain, sha="aaa1111")})
    c = _claim(claimed={"carry": "absolute", "effect": 0.05}, replication={"method": "bio", "baseline": "adamw"},
               lr_control={"method": "bio", "baseline": "adamw_lr"})
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]
    assert q["attribution"]["verdict"] == "replicated" and q["lr_control"]["verdict"] == "not replicated"
    assert r["V6-1"]["verdict"] == "not replicated" and "LR-matched control" in r["V6-1"]["why"]
    flags = q["attribution"]["provenance"]["flags"]
    assert any("2 different commits" in f for f in flags) and any("-dirty" in f for f in flags)
    assert "first run only" in q["attribution"]["provenance"]["note"]


def test_runs_of_different_code_paths_are_flagged(tmp_path):
    def prov(*paths):
        return [{"seed": s, "git_sha": "abc", "code_path": paths[s % len(paths)]} for s in range(5)]

    def flags(method: dict, baseline: dict) -> list:
        write_agg(tmp_path, "synth", "clf", {"adamw": {**_label(BASE), **baseline}, "bio": {**_label(gain), **method}})
        out, r = _eval(tmp_path, c)
        assert r["V6-1"]["verdict"] == "replicated"  # a flag, not a verdict change
        return r["V6-1"]["questions"]["attribution"]["provenance"]["flags"]

    gain = [b + 0.05 + d for b, d in zip(BASE, [0, .002, -.002, .001, 0])]
    c = _claim(claimed={"carry": "absolute", "effect": 0.05}, replication={"method": "bio", "baseline": "adamw"})
    # two optimizers, each on its own path: by design, not flagged
    assert flags({"provenance": prov("compiled"), "optimizer": "biostatis_v6"},
                 {"provenance": prov("torch"), "optimizer": "adamw"}) == []
    # one optimizer on two paths in the two arms, or one arm whose seeds took two paths: flagged
    assert flags({"provenance": prov("compiled"), "optimizer": "neuroplastic"},
                 {"provenance": prov("foreach"), "optimizer": "neuroplastic"}) == [
        "one optimizer on different code paths (compiled vs foreach)"]
    assert flags({"provenance": prov("compiled", "foreach"), "optimizer": "biostatis_v6"},
                 {"provenance": prov("torch"), "optimizer": "adamw"}) == [
        "an arm's runs took different code paths (compiled/foreach)"]


def test_direction_only_claim_and_unequal_tuning_note(tmp_path):
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label([x + 0.05 for x in BASE], tuned=True)})
    c = _without_test(seed_value={"text": "no number"})
    c["test"] = _t()
    c["replication"] = {"method": "bio", "baseline": "adamw"}
    out, r = _eval(tmp_path, c)
    q = r["V6-1"]["questions"]["attribution"]
    assert r["V6-1"]["verdict"] == "replicated (direction only)" and "1% of |baseline mean|" in q["sesoi_rule"]
    assert q["equal_tuning"] is False and q["tuning"].startswith("unequal tuning")


def test_a_registered_record_source_is_used(tmp_path, monkeypatch):
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label(BASE)})
    seen = []

    def timing(root, spec, role, cache):
        arm = claims._arm_from_aggregate(root, {**spec, "metric": "final_test"}, role, cache)
        seen.append(role)
        return {**arm, "values": [0.1] * 5 if role == "baseline" else [0.2] * 5}

    monkeypatch.setitem(claims.SOURCES, "aggregate", timing)
    c = _claim(id="V6-12", seed_value={"baseline": 1.0, "method": 1.67, "text": "x"}, claimed={"carry": "ratio"},
               test=_t(metric="time_per_opt_step_s"), replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c)
    assert seen and r["V6-12"]["questions"]["attribution"]["ratio"] == pytest.approx(2.0)


def test_baseline_gate_and_missing_results(tmp_path):
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label(BASE)}, gate_passed=False)
    a = _claim(replication={"method": "bio", "baseline": "adamw"})
    b = _claim(id="V6-2", test=_t(experiment="absent"), replication={"method": "bio", "baseline": "adamw"})
    c = _claim(id="V6-3", test=_t(method="nolabel"), replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, a, b, c)
    assert r["V6-1"]["verdict"] == "baseline failed" and "min 0.5" in r["V6-1"]["why"]
    assert r["V6-2"]["verdict"] == "not run" and "absent" in r["V6-2"]["why"]
    assert r["V6-3"]["verdict"] == "not run" and "'nolabel'" in r["V6-3"]["why"]


# ------------------------------------------------------------------------------------ the shared fixture tree
@pytest.fixture
def tree(tmp_path):
    exp, res = build_tree(tmp_path)
    cfg = aggregate.load_experiment(exp)
    from optirep.report._io import write_json
    write_json(res / "aggregate" / "clf.json", aggregate.aggregate_task(cfg, res, "clf"))
    return tmp_path, exp, res


def test_evaluate_from_a_real_aggregate_and_derived_claims(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw"}
    cs = [
        _claim(id="V6-10", direction="lower", seed_value={"baseline": 9.83, "method": 9.41, "text": "x"},
               claimed={"carry": "relative"}, test={**t, "metric": "seed_effective_rank"}),
        _claim(id="V6-9", direction="lower", test={**t, "metric": "time_per_step_s"}),
        _claim(id="V6-1", test={**t, "metric": "final_test"}),
    ]
    nr = _without_test(id="V6-3", not_run="needs CIFAR-100")
    der = _without_test(id="V6-13", derived_from=["V6-10", "V6-9"])
    out, v = _eval(root, *cs, nr, der)
    # bio's seed 2 diverged: it is a failed run, the spectral metric is tested with a rank test
    assert v["V6-1"]["n_method_failed"] == 1 and v["V6-1"]["questions"]["attribution"]["rank_based"]
    assert v["V6-9"]["verdict"] == "not replicated" and "opposite" in v["V6-9"]["why"]
    assert v["V6-3"]["verdict"] == "not run" and v["V6-3"]["why"] == "needs CIFAR-100"
    assert v["V6-13"]["verdict"] == "not replicated"
    assert sum(out["counts"].values()) == out["n_claims"] == 5


def test_an_aggregate_from_an_earlier_design_is_not_judged(tree):
    # e.g. a results/<exp>/aggregate/<task>.json left from before the experiment's seeds or tuning changed
    root, exp, res = tree
    c = _claim(id="V6-1", test={"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw",
                                "metric": "final_test"})
    assert _eval(root, c, experiments_dir=root / "experiments")[1]["V6-1"]["verdict"] != "not run"
    cfg = yaml.safe_load(exp.read_text())
    cfg["seeds"] = [*cfg["seeds"], 99]
    exp.write_text(yaml.safe_dump(cfg))
    r = _eval(root, c, experiments_dir=root / "experiments")[1]["V6-1"]
    assert r["verdict"] == "not run" and "seeds" in r["why"] and "earlier design" in r["why"]
    del cfg["tasks"]["clf"]
    exp.write_text(yaml.safe_dump(cfg))
    assert "no longer in" in _eval(root, c, experiments_dir=root / "experiments")[1]["V6-1"]["why"]


def test_cli_check_reports_invalid_file(tmp_path, capsys):
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "claims": [_claim(direction="sideways")]}))
    assert claims.main(["--claims", str(bad), "--check"]) == 2
    assert "sideways" in capsys.readouterr().err


def test_full_scale_block_and_baseline_task(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "time_per_step_s"}
    # A second task holding the baseline (Planeswalker style: sum and multiplex are two tasks).
    (res / "aggregate" / "clf_sum.json").write_text((res / "aggregate" / "clf.json").read_text())
    cfg = yaml.safe_load(exp.read_text())
    cfg["tasks"]["clf_sum"] = cfg["tasks"]["clf"]
    exp.write_text(yaml.safe_dump(cfg))
    cross = _claim(id="PW-1", test={**t, "baseline_task": "clf_sum"}, claimed={"carry": "ratio"})
    gpu = _claim(id="V6-10", test=t, full_scale={**t, "experiment": "full_synth"}, claimed={"carry": "ratio"})
    nr = _without_test(id="V6-3", not_run="needs CIFAR-100", full_scale={**t, "experiment": "full_synth"},
                       claimed={"carry": "ratio"})
    (root / "experiments" / "full_synth.yaml").write_text("name: full_synth\ngpu_estimate: >-\n  About 2\n  GPU-hours\n")
    out = {r["id"]: r for r in _eval(root, cross, gpu, nr, experiments_dir=root / "experiments")[0]["claims"]}
    assert out["PW-1"]["verdict"] == "replicated" and out["PW-1"]["baseline_task"] == "clf_sum"
    assert out["V6-10"]["full_scale"]["verdict"] == "not run"
    assert out["V6-3"]["verdict"] == "not run" and out["V6-3"]["gpu_estimate"] == "About 2 GPU-hours"
    # Once the GPU study has results, the full-scale verdict appears beside the CPU one.
    import shutil
    shutil.copytree(res, root / "results" / "full_synth")
    both, out = _eval(root, cross, gpu, nr)
    assert out["V6-3"]["verdict"] == "not run" and out["V6-3"]["full_scale"]["verdict"] == "replicated"
    from optirep.report import latex, readme
    assert "At full scale" in latex.claims_section(both)
    assert "full scale (reduced scale, CPU): replicated" in readme.render(both)


def test_full_scale_cost_is_extrapolated_from_the_measured_step_times(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "final_test"}
    full = {"name": "full_synth", "seeds": [0, 1, 2, 3, 4], "tuning": {"budget": 4}, "gpu_estimate": "9 GPU-hours (full)",
            "tasks": {"big": {"dataset": "cifar10", "data_args": {"val_size": 5000}, "batch_size": 128, "epochs": 2,
                              "optimizers": ["adamw", "bio_tuned"]}},
            "optimizers": {"adamw": {"name": "adamw"}, "bio_tuned": {"name": "biostatis_v6", "tune": True}}}
    (root / "experiments" / "full_synth.yaml").write_text(yaml.safe_dump(full))
    out, r = _eval(root, _claim(id="V6-1", test=t, full_scale={**t, "experiment": "full_synth", "task": "big"}),
                   experiments_dir=root / "experiments")
    cost = r["V6-1"]["full_scale"]["cost"]
    # 45000 examples / 128 -> 352 steps per epoch, 2 epochs; 5 seeds + (5 seeds + a tuning budget of 4) runs.
    assert cost["steps_per_run"] == 704 and cost["runs"] == 14 and cost["examples"] == 14 * 704 * 128
    # Measured rate: mean time_per_step_s of synth/clf (six runs, 0.016 s) over its batch of 8.
    assert cost["s_per_example"] == pytest.approx(0.016 / 8)
    assert cost["cpu_hours"] == pytest.approx(14 * 704 * 128 * 0.016 / 8 / 3600)
    from optirep.report import latex
    text = latex.claims_section({"claims": [r["V6-1"]]})
    assert "Full-scale cost: up to 14 runs" in text
    # the estimate printed "at full scale" is the full-scale file's, never the reduced experiment's
    assert r["V6-1"]["gpu_estimate"] is None and "GPU estimate at full scale" in text and "9 GPU-hours (full)" in text


def test_optirep_power_reports_mde_and_seeds_needed(tmp_path, capsys):
    from optirep.report import power
    write_agg(tmp_path, "pilot", "clf", {"adamw": _label(BASE), "bio": _label([b + d for b, d in
                                                                              zip(BASE, [0.01, -0.01, 0.02, 0.0, -0.02])])})
    c = _claim(claimed={"carry": "absolute", "effect": 0.004}, test=_t(experiment="pilot"),
               replication={"method": "bio", "baseline": "adamw"})
    cl = tmp_path / "claims.yaml"
    cl.write_text(yaml.safe_dump({"version": 1, "design": {"seed_budget": 10}, "claims": [c]}))
    out = tmp_path / "power.json"
    assert power.main(["--claims", str(cl), "--results", str(tmp_path / "results"), "--n", "8", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    from optirep.analysis.stats import power_analysis
    sd = float(np.std(np.array([0.01, -0.01, 0.02, 0.0, -0.02]), ddof=1))
    want = power_analysis(sd, 8, 0.002)
    row = rows[0]
    assert row["n"] == 8 and row["sd"] == pytest.approx(sd) and row["mde"] == pytest.approx(want["mde"])
    assert row["n_needed"] == want["n_needed"] > 10 and "untestable at this scale" in capsys.readouterr().out
    assert power.main(["--claims", str(cl), "--results", str(tmp_path / "results"), "--n", "1"]) == 2


def test_forest_plot_has_one_row_per_measured_claim(tmp_path):
    from optirep.report import figures
    write_agg(tmp_path, "synth", "clf", {"adamw": _label(BASE), "bio": _label([x + 0.05 for x in BASE])})
    c = _claim(claimed={"carry": "absolute", "effect": 0.05}, replication={"method": "bio", "baseline": "adamw"})
    nr = _without_test(id="V6-3", not_run="no data")
    absent = _claim(id="V6-4", test=_t(experiment="absent"), replication={"method": "bio", "baseline": "adamw"})
    out, r = _eval(tmp_path, c, nr, absent)
    rows = figures.forest_rows(out)
    assert [row["id"] for row in rows] == ["V6-1"]
    q = rows[0]["q"]["attribution"]
    assert q["x"] == pytest.approx(2.0) and q["claimed"] == pytest.approx(2.0)  # effect = claim = 2 SESOI
    paths = figures.fig_forest(out, tmp_path / "forest")
    assert [p.suffix for p in paths] == [".pdf", ".png"] and all(p.stat().st_size > 1000 for p in paths)
    empty = figures.fig_forest({"claims": [r["V6-3"]], "n_claims": 1}, tmp_path / "empty")
    assert len(empty) == 2  # the paper includes the figure even when nothing was measured


def test_carry_over_rules_and_sesoi_defaults():
    # V6-1: 69.23 -> 72.01 % is a 9.03% relative error reduction; our baseline at 0.93 has error 0.07.
    v61 = _claim(seed_value={"baseline": 69.23, "method": 72.01, "text": "x"}, claimed={"carry": "error_reduction"})
    eff, rule = claims.claimed_effect(v61, 0.93)
    assert eff == pytest.approx((30.77 - 27.99) / 30.77 * 0.07) and "error reduction" in rule
    assert claims.sesoi_for(v61, eff, 0.93)[0] == pytest.approx(eff / 2)
    # relative change times our baseline mean; a ratio as a log ratio; NP-1's +0.10 pp via seed_baseline
    rel = _claim(seed_value={"baseline": 9.83, "method": 9.41, "text": "x"}, claimed={"carry": "relative"})
    assert claims.claimed_effect(rel, 9.95)[0] == pytest.approx(0.42 / 9.83 * 9.95)
    rat = _claim(seed_value={"baseline": 1.0, "method": 1.67, "text": "x"}, claimed={"carry": "ratio"})
    assert claims.claimed_effect(rat, 0.1)[0] == pytest.approx(math.log(1.67))
    np1 = _claim(seed_value={"method": 97.457, "text": "x"}, claimed={"carry": "error_reduction", "seed_baseline": 97.357})
    assert claims.claimed_effect(np1, 0.94)[0] == pytest.approx(0.10 / 2.643 * 0.06, rel=1e-3)
    # no number: 1% of the baseline mean (log 1.01 for a ratio); an explicit sesoi wins over the legacy margin
    bare = _claim(seed_value={"text": "no number"})
    assert claims.claimed_effect(bare, 0.9)[0] != claims.claimed_effect(bare, 0.9)[0]  # NaN
    assert claims.sesoi_for(bare, math.nan, 0.9) == (pytest.approx(0.009), "no number claimed: 1% of |baseline mean| (default)")
    legacy = _claim(test={**_t(), "margin": {"relative": 0.01}}, seed_value={"text": "x"})
    assert claims.sesoi_for(legacy, math.nan, 0.8)[0] == pytest.approx(0.008)
    assert claims.sesoi_for({**legacy, "sesoi": {"absolute": 0.02}}, math.nan, 0.8)[0] == 0.02
