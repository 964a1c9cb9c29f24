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


def _spec(metric="time_per_step_s", method="v6", baseline="adamw"):
    return {"experiment": "synth", "task": "clf", "method": method, "baseline": baseline, "metric": metric,
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


def _variant_record(root: Path, n=25):
    """A four-arm record as `optirep timing` writes it: AdamW default/fused, V6 default/reference."""
    base = [0.1 * (1 + 0.01 * (i % 3)) for i in range(n)]
    arms = {"adamw": ({}, "for-loop", 1.0), "adamw[fused=true]": ({"fused": True}, "fused", 0.5),
            "v6": ({}, "compiled", 1.2), "v6[foreach=false]": ({"foreach": False}, "reference", 3.0)}
    per = {}
    for k, (e, (ov, path, f)) in enumerate(arms.items()):
        ts = [t * f * (1 + 0.01 * ((7 * i + 3 * k) % 5 - 2)) for i, t in enumerate(base)]  # +-2% per-round jitter
        per[e] = {"label": e.split("[")[0], "overrides": ov, "code_path": path, "hp": {}, "times_step_s": ts,
                  "times_opt_step_s": [t / 2 for t in ts]}
    rec = {"scale": "unit", "baseline": "adamw", "labels": list(per), "repeats": n, "enough_for_claim": True,
           "min_repeats_for_claim": 20, "per_label": per, "hardware": {"device": "cpu"}, "git_sha": "abc"}
    path = root / "synth" / "timing" / "clf.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_timing_arm_reads_variant_labels_and_their_code_paths(tmp_path):
    _variant_record(tmp_path)
    arm = claims.SOURCES["timing"]
    # question (b): fastest vs fastest; the ratio pairs round by round
    m, b = (arm(tmp_path, _spec(method="v6", baseline="adamw[fused=true]"), r, {}) for r in ("method", "baseline"))
    assert m["values"][4] / b["values"][4] == pytest.approx(2.4, rel=0.05) and m["seeds"] == b["seeds"]
    assert b["provenance"][0]["code_path"] == "fused" and m["provenance"][0]["code_path"] == "compiled"
    # question (a): the seed's code paths; a variant spelt differently still names the same arm
    ref = arm(tmp_path, _spec(method="v6[ foreach = false ]"), "method", {})
    assert ref["provenance"][0]["code_path"] == "reference" and ref["values"][0] == pytest.approx(0.3, rel=0.05)
    # a variant the record does not hold is named as missing, with the labels it does hold
    miss = arm(tmp_path, _spec(method="v6[foreach=true]"), "method", {})["missing"]
    assert "method label 'v6[foreach=true]' not in" in miss and "v6[foreach=false]" in miss


def test_a_claim_on_variant_arms_is_judged_from_the_timing_record(tmp_path):
    _variant_record(tmp_path)
    c = {"id": "V6-2", "optimizer": "V6", "statement": "s", "seed_value": {"baseline": 1.0, "method": 1.67, "text": "t"},
         "metric": "time", "direction": "higher", "setup": "s", "source": "a/b @ 1 : c.py", "claimed": {"carry": "ratio"},
         "replication": {"method": "v6[foreach=false]", "baseline": "adamw", "note": "the seed's code paths"},
         "test": {**_spec(baseline="adamw[fused=true]"), "proxy": "fastest paths"}}
    doc = claims.validate_claims({"version": 1, "claims": [c]})
    rec = claims.evaluate(doc, tmp_path)["claims"][0]
    a, b = rec["questions"]["replication"], rec["questions"]["attribution"]
    assert (a["method"], a["baseline"], b["method"], b["baseline"]) == ("v6[foreach=false]", "adamw", "v6",
                                                                        "adamw[fused=true]")
    assert a["ratio"] == pytest.approx(3.0, rel=0.01) and b["ratio"] == pytest.approx(2.4, rel=0.01)
    assert a["provenance"]["method_code_paths"] == ["reference"] and a["provenance"]["baseline_code_paths"] == ["for-loop"]
    assert b["provenance"]["baseline_code_paths"] == ["fused"] and a["note"] == "the seed's code paths"
    assert a["verdict"] == "replicated" and b["verdict"] == "replicated"  # 3.0x and 2.4x both exceed the claimed 1.67x


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["test"].update(source="aggregate"),
     r"claim V6-2 \(test.baseline\): the label variant 'adamw\[fused=true\]' exists only in a timing record"),
    # `replication` inherits the source from `test`
    (lambda c: c["test"].update(source="aggregate", baseline="adamw"),
     r"claim V6-2 \(replication.method\): the label variant 'v6\[foreach=false\]' exists only"),
    (lambda c: c["test"].update(method="v6[foreach]"), r"claim V6-2 \(test.method\): 'v6\[foreach\]': 'foreach' is not key=value"),
    (lambda c: c["test"].update(method="V6 H"), r"claim V6-2 \(test.method\): 'V6 H' is not an optimizer label entry"),
])
def test_claims_file_allows_variants_only_in_timing_comparisons(mutate, message):
    c = {"id": "V6-2", "optimizer": "V6", "statement": "s", "seed_value": {"text": "t"}, "metric": "time",
         "direction": "higher", "setup": "s", "source": "a/b @ 1 : c.py",
         "replication": {"method": "v6[foreach=false]", "baseline": "adamw"},
         "test": _spec(baseline="adamw[fused=true]")}
    claims.validate_claims({"version": 1, "claims": [c]})  # valid as written
    mutate(c)
    with pytest.raises(claims.ClaimsError, match=message):
        claims.validate_claims({"version": 1, "claims": [c]})


def test_repo_timing_claims_read_the_workflow_timing_records():
    """Question (a) compares the seed's code paths (V6's reference loop vs AdamW's default), question (b) the
    fastest path of each (V6's default vs fused AdamW); every arm is one the workflow times."""
    from optirep.config import parse_variant

    doc = claims.load_claims(ROOT / "experiments" / "claims.yaml")
    cpu = yaml.safe_load((ROOT / "experiments" / "workflow-cpu.yaml").read_text())["timing"]
    full = yaml.safe_load((ROOT / "experiments" / "workflow.yaml").read_text())["timing"]
    by_id = {c["id"]: c for c in doc["claims"]}
    for cid in ("V6-2", "V6-6", "V6-12"):
        c = by_id[cid]
        blocks = (("test", c["test"], cpu), ("replication", claims._spec(c["test"], c["replication"]), cpu),
                  ("full_scale", c["full_scale"], full))
        for name, t, timing in blocks:
            assert t["source"] == "timing" and t["metric"] in claims.TIMING_METRICS, (cid, name)
            entries = timing[t["experiment"]][t["task"]]["optimizers"]
            assert t["method"] in entries and t["baseline"] in entries, (cid, name, entries)
            want = {"method": {} if name != "replication" else {"foreach": False},
                    "baseline": {"fused": True} if name != "replication" else {}}
            for role in ("method", "baseline"):
                assert parse_variant(t[role])[1] == want[role], (cid, name, role)
    # the committed CPU records are judged where they hold the claim's arms; a record measured before the
    # arms changed reads "not run" naming the arm it lacks (rerun the timing stage: issue #16)
    out = claims.evaluate(doc, ROOT / "results", experiments_dir=ROOT / "experiments")
    recs = {c["id"]: c for c in out["claims"]}
    for cid in ("V6-2", "V6-6", "V6-12"):
        for qname, q in recs[cid]["questions"].items():
            t = claims._spec(by_id[cid]["test"], by_id[cid].get(qname) if qname != "attribution" else None)
            rec = json.loads((ROOT / "results" / t["experiment"] / "timing" / f"{t['task']}.json").read_text())
            if t["method"] in rec["per_label"] and t["baseline"] in rec["per_label"]:
                assert q["verdict"] != "not run", (cid, qname, q.get("why"))
                paths = [rec["per_label"][t[r]]["code_path"] for r in ("method", "baseline")]
                assert [q["provenance"]["method_code_paths"], q["provenance"]["baseline_code_paths"]] == [[p] for p in paths]
            else:
                assert q["verdict"] == "not run" and "label" in q["why"] and "not in" in q["why"], (cid, qname)


def test_variant_labels_print_legibly_in_the_paper_and_the_readme(tmp_path):
    from optirep.report import latex, readme

    _variant_record(tmp_path)
    c = {"id": "V6-2", "optimizer": "V6", "statement": "s", "seed_value": {"baseline": 1.0, "method": 1.67, "text": "t"},
         "metric": "time", "direction": "higher", "setup": "s", "source": "a/b @ 1 : c.py", "claimed": {"carry": "ratio"},
         "replication": {"method": "v6[foreach=false]", "baseline": "adamw", "note": "the seed's code paths"},
         "test": _spec(baseline="adamw[fused=true]")}
    out = claims.evaluate(claims.validate_claims({"version": 1, "claims": [c]}), tmp_path)
    table, section = latex.claims_table(out), latex.claims_section(out)
    # brackets stay as typed (inside \texttt); a long variant may break after `[` and commas
    assert r"\texttt{v6} vs \texttt{adamw[\allowbreak{}fused=true]}" in table
    assert r"\texttt{v6[\allowbreak{}foreach=false]} vs \texttt{adamw}" in table
    assert r"(\texttt{v6[\allowbreak{}foreach=false]} vs \texttt{adamw} on synth/clf" in section
    assert "the seed's code paths" in section  # the question's note says which code paths it compares
    assert "| V6-2 |" in readme.render(out)
