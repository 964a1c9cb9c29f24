"""Timing claims (`test.source: timing`) judged from the timing stage's record, not from training runs.

    python -m pytest -q tests/test_claims_timing.py
"""

from __future__ import annotations

import json

import pytest

from optirep.report import claims
from optirep.timing import median_interval


def _claim(cid="V6-2", direction="higher", metric="step_s", seed=(1.0, 1.67)):
    return {"id": cid, "optimizer": "V6", "statement": "V6 costs +67% time", "direction": direction,
            "seed_value": {"baseline": seed[0], "method": seed[1], "text": "+67%"}, "metric": "time",
            "setup": "s", "source": "a/b @ 1 : c.py",
            "test": {"experiment": "synth", "task": "clf", "method": "v6", "baseline": "adamw", "metric": metric,
                     "source": "timing"}}


def _record(root, ratios, repeats=None, base=0.1):
    """A timing record whose method/baseline paired ratios are `ratios` (baseline step `base` s)."""
    n = len(ratios)
    b_times = [base] * n
    m_times = [base * r for r in ratios]
    per = {"adamw": {"code_path": "for-loop", "step_s": median_interval(b_times), "opt_step_s": median_interval(b_times),
                     "ratio_step": median_interval([1.0] * n), "ratio_opt_step": median_interval([1.0] * n)},
           "v6": {"code_path": "compiled", "step_s": median_interval(m_times), "opt_step_s": median_interval(m_times),
                  "ratio_step": median_interval(ratios), "ratio_opt_step": median_interval(ratios)}}
    rec = {"scale": "unit", "baseline": "adamw", "repeats": repeats or n, "enough_for_claim": (repeats or n) >= 20,
           "min_repeats_for_claim": 20, "per_label": per, "hardware": {"device": "cpu"}, "git_sha": "abc"}
    path = root / "synth" / "timing" / "clf.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def _verdict(tmp_path, claim, ratios, **kw):
    _record(tmp_path, ratios, **kw)
    out = claims.evaluate(claims.validate_claims({"version": 1, "claims": [claim]}), tmp_path)
    return out["claims"][0]


@pytest.mark.parametrize("ratios, verdict", [
    ([1.6 + 0.01 * i for i in range(25)], "replicated"),          # clearly slower, as claimed
    ([0.8 + 0.01 * i for i in range(25)], "not replicated"),      # clearly faster
    ([1.0 + 0.01 * (i - 12) for i in range(25)], "not replicated"),  # around 1 and below 1 + margin (0.335)
    ([1.1 + 0.05 * (i - 12) for i in range(25)], "inconclusive"),  # [0.85, 1.35]: includes 1 and 1 + margin
])
def test_timing_verdicts_follow_the_paired_ratio_interval(tmp_path, ratios, verdict):
    rec = _verdict(tmp_path, _claim(), ratios)
    assert rec["verdict"] == verdict, rec["why"]
    assert rec["source"] == "timing" and rec["n_method"] == 25 and rec["code_paths"]["v6"] == "compiled"
    assert rec["ratio"] == pytest.approx(sorted(ratios)[12])
    assert rec["ratio_ci"][0] <= rec["ratio"] <= rec["ratio_ci"][1]


def test_timing_record_with_too_few_repeats_is_inconclusive(tmp_path):
    rec = _verdict(tmp_path, _claim(), [2.0] * 5)
    assert rec["verdict"] == "inconclusive" and "fewer than the 20" in rec["why"]


def test_missing_record_label_or_other_baseline_is_not_run(tmp_path):
    out = claims.evaluate(claims.validate_claims({"version": 1, "claims": [_claim()]}), tmp_path)
    assert out["claims"][0]["verdict"] == "not run" and "timing/clf.json absent" in out["claims"][0]["why"]
    c = _claim()
    c["test"]["method"] = "v7"
    assert _verdict(tmp_path, c, [1.5] * 25)["verdict"] == "not run"
    c = _claim()
    c["test"]["baseline"] = "v6"
    c["test"]["method"] = "adamw"
    rec = _verdict(tmp_path, c, [1.5] * 25)
    assert rec["verdict"] == "not run" and "measures against 'adamw'" in rec["why"]


def test_timing_metric_must_be_a_timing_record_metric():
    with pytest.raises(claims.ClaimsError, match=r"test\.metric 'time_per_step_s' with source timing .*step_s, opt_step_s"):
        claims.validate_claims({"version": 1, "claims": [_claim(metric="time_per_step_s")]})


def test_repo_timing_claims_point_at_the_workflow_timing_stage():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    doc = claims.load_claims(root / "experiments" / "claims.yaml")
    cpu = yaml.safe_load((root / "experiments" / "workflow-cpu.yaml").read_text())["timing"]
    full = yaml.safe_load((root / "experiments" / "workflow.yaml").read_text())["timing"]
    by_id = {c["id"]: c for c in doc["claims"]}
    for cid in ("V6-2", "V6-6", "V6-12"):
        for block, timing in (("test", cpu), ("full_scale", full)):
            t = by_id[cid][block]
            assert t["source"] == "timing", (cid, block)
            labels = timing[t["experiment"]][t["task"]]["optimizers"]
            assert labels[0] == t["baseline"] and t["method"] in labels, (cid, block)
