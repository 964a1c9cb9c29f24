"""optirep aggregate on the synthetic tree: summaries, divergence, Holm, time-to-target, gate, tuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from optirep.report import aggregate
from test_report_fixture import BEST_VAL, ERANK, FINAL_TEST, build_tree


@pytest.fixture
def agg(tmp_path):
    exp, res = build_tree(tmp_path)
    out = res / "aggregate" / "clf.json"
    assert aggregate.main(["--experiment", str(exp), "--results", str(res), "--task", "clf", "--out", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: NaN written as null
    return json.loads(text)


def test_summaries_match_numpy_and_count_the_diverged_run(agg):
    ad = agg["per_label"]["adamw"]["stats"]["final_test"]
    assert ad["n"] == 3 and ad["n_nan"] == 0
    assert ad["mean"] == pytest.approx(0.82) and ad["std"] == pytest.approx(0.02)
    bio = agg["per_label"]["bio"]
    assert bio["n_runs"] == 3 and bio["n_diverged"] == 1 and bio["diverged_seeds"] == [2]
    assert bio["stats"]["final_test"]["n"] == 2 and bio["stats"]["final_test"]["n_nan"] == 1
    assert bio["values"]["final_test"][2] is None  # kept in place, not dropped
    assert bio["stats"]["seed_effective_rank"]["mean"] == pytest.approx(np.mean(ERANK["bio"]))
    assert agg["per_label"]["adamw"]["stats"]["optimizer_state_bytes"]["mean"] == 2000
    # every run's commit and code path travel with the label (the claims compare them across arms)
    assert agg["per_label"]["bio"]["provenance"] == [{"seed": s, "git_sha": "abc", "code_path": None} for s in (0, 1, 2)]


def test_comparison_is_welch_on_finite_runs_with_holm(agg):
    (c,) = agg["comparisons"]
    a = [x for x in FINAL_TEST["bio"] if not math.isnan(x)]
    ref = sps.ttest_ind(a, FINAL_TEST["adamw"], equal_var=False)
    assert c["method"] == "bio" and c["baseline"] == "adamw"
    assert c["p"] == pytest.approx(ref.pvalue) and c["n_method"] == 2 and c["n_method_nan"] == 1
    assert c["p_holm"] == pytest.approx(ref.pvalue)  # family of one
    assert c["significant"] and c["better"]
    assert c["paired_wins"] == {"wins": 2, "losses": 1, "ties": 0, "n": 3}  # diverged seed = loss


def test_holm_across_three_labels():
    comps = [{"p": 0.01}, {"p": 0.04}, {"p": 0.03}, {"p": math.nan}]
    aggregate.add_holm(comps)
    assert [c["p_holm"] for c in comps[:3]] == pytest.approx([0.03, 0.06, 0.06])
    assert [c["significant"] for c in comps] == [True, False, False, False]
    assert math.isnan(comps[3]["p_holm"]) and comps[0]["family_size"] == 3


def test_target_time_to_target_and_tuning(agg):
    assert agg["target"]["value"] == pytest.approx(np.median(BEST_VAL["adamw"]))
    ttt = agg["per_label"]["adamw"]["time_to_target"]
    # adamw seed0 peaks at 0.79 < target 0.81: a miss (null), the others reach it at step 40.
    assert [r["step"] for r in ttt["per_seed"]] == [None, 40, 40]
    assert ttt["n_reached"] == 2 and ttt["median_step"] == 40
    assert agg["per_label"]["bio"]["time_to_target"]["per_seed"][2]["step"] is None  # diverged
    tuning = agg["per_label"]["bio"]["tuning"]
    assert tuning["selected"]["trial"] == 1 and [t["hp"]["lr"] for t in tuning["trials"]] == [1e-4, 1e-3, 1e-2]
    assert tuning["trials"][2]["diverged"] is True
    assert agg["gate_passed"] is True and agg["baseline"] == "adamw"
    # 6 final runs of 1 s and 6 trials of 0.5 s.
    assert agg["compute_s"] == {"runs": pytest.approx(6.0), "trials": pytest.approx(3.0), "total": pytest.approx(9.0)}


def test_gate_failure_path(tmp_path):
    exp, res = build_tree(tmp_path, gate_min=0.95)
    cfg = aggregate.load_experiment(exp)
    agg = aggregate.aggregate_task(cfg, res, "clf")
    assert agg["gate_passed"] is False
    assert "< min 0.95" in agg["gate"]["reason"]


def test_diverged_baseline_fails_the_gate(tmp_path):
    exp, res = build_tree(tmp_path)
    cfg = aggregate.load_experiment(exp)
    cfg["tasks"]["clf"]["gate"]["optimizer"] = "bio"  # bio has a diverged seed
    agg = aggregate.aggregate_task(cfg, res, "clf")
    assert not agg["gate_passed"] and "1/3 baseline runs diverged" in agg["gate"]["reason"]


def test_missing_seed_is_listed_and_bad_task_named(tmp_path):
    exp, res = build_tree(tmp_path)
    (res / "runs/clf/adamw/seed1/metrics.json").unlink()
    cfg = aggregate.load_experiment(exp)
    agg = aggregate.aggregate_task(cfg, res, "clf")
    assert agg["per_label"]["adamw"]["missing_seeds"] == [1] and agg["per_label"]["adamw"]["n_runs"] == 2
    with pytest.raises(aggregate.AggregateError, match="task 'nope' not in experiment 'synth'.*clf"):
        aggregate.aggregate_task(cfg, res, "nope")
    assert aggregate.main(["--experiment", str(exp), "--results", str(res), "--task", "nope"]) == 2
