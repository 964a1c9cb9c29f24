"""Timing claims (`source: timing`) read the timing stage's record, not the training runs.

    python -m pytest -q tests/test_claims_timing.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from optirep.report import claims

ROOT = Path(__file__).resolve().parents[1]


def _record(root: Path, ratios, repeats=None, base=0.1):
    """A timing record whose method/baseline per-round times have the paired ratios `ratios`."""
    n = len(ratios)
    times = {"adamw": [base * (1 + 0.01 * (i % 3)) for i in range(n)]}
    times["v6"] = [t * r for t, r in zip(times["adamw"], ratios)]
    per = {lab: {"code_path": path, "hp": {}, "times_step_s": ts, "times_opt_step_s": ts}
           for (lab, ts), path in zip(times.items(), ("for-loop", "compiled"))}
    rec = {"scale": "unit", "baseline": "adamw", "repeats": repeats or n, "enough_for_claim": (repeats or n) >= 20,
           "min_repeats_for_claim": 20, "per_label": per, "hardware": {"device": "cpu"}, "git_sha": "abc"}
    path = root / "synth" / "timing" / "clf.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def _spec(metric="time_per_step_s", method="v6"):
    return {"experiment": "synth", "task": "clf", "method": method, "baseline": "adamw", "metric": metric,
            "source": "timing"}


def test_timing_arm_pairs_the_interleaved_rounds(tmp_path):
    _record(tmp_path, [1.5 + 0.01 * i for i in range(25)])
    m = claims.SOURCES["timing"](tmp_path, _spec(), "method", {})
    b = claims.SOURCES["timing"](tmp_path, _spec(), "baseline", {})
    assert m["seeds"] == b["seeds"] == list(range(25))  # paired round by round
    assert m["values"][3] / b["values"][3] == pytest.approx(1.53)
    assert m["provenance"][0]["code_path"] == "compiled" and m["agg"]["higher_is_better"] is False
    assert not any(m["failed"])


@pytest.mark.parametrize("spec, repeats, message", [
    (_spec(method="v7"), None, "method label 'v7' not in"),
    (_spec(metric="final_test"), None, "is not in a timing record"),
    (_spec(), 5, "fewer than the 20 a timing claim needs"),
])
def test_timing_arm_reports_what_is_missing(tmp_path, spec, repeats, message):
    _record(tmp_path, [1.5] * 25 if repeats is None else [1.5] * repeats)
    arm = claims.SOURCES["timing"](tmp_path, spec, "method", {})
    assert message in arm["missing"]
    assert "timing/clf.json absent" in claims.SOURCES["timing"](tmp_path / "none", _spec(), "method", {})["missing"]


def test_repo_timing_claims_read_the_workflow_timing_records():
    doc = claims.load_claims(ROOT / "experiments" / "claims.yaml")
    cpu = yaml.safe_load((ROOT / "experiments" / "workflow-cpu.yaml").read_text())["timing"]
    full = yaml.safe_load((ROOT / "experiments" / "workflow.yaml").read_text())["timing"]
    by_id = {c["id"]: c for c in doc["claims"]}
    for cid in ("V6-2", "V6-6", "V6-12"):
        for block, timing in (("test", cpu), ("full_scale", full)):
            t = by_id[cid][block]
            assert t["source"] == "timing" and t["metric"] in claims.TIMING_METRICS, (cid, block)
            labels = timing[t["experiment"]][t["task"]]["optimizers"]
            assert labels[0] == t["baseline"] and t["method"] in labels, (cid, block)
    # the committed CPU records are judged (not "not run")
    out = claims.evaluate(doc, ROOT / "results", experiments_dir=ROOT / "experiments")
    verdicts = {c["id"]: c["verdict"] for c in out["claims"]}
    for cid in ("V6-2", "V6-6", "V6-12"):
        assert verdicts[cid] != "not run", cid
