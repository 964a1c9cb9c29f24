"""claims.yaml validity and coverage, and every verdict kind of optirep claims."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def _claim(**over):
    c = {"id": "V6-1", "optimizer": "V6", "statement": "s", "seed_value": {"baseline": 1.0, "method": 1.1, "text": "t"},
         "metric": "acc", "direction": "higher", "setup": "s", "source": "a/b @ 1 : c.py",
         "test": {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "final_test"}}
    c.update(over)
    return c


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(direction="up"), r"claim V6-1 .*allowed values: higher, lower, equal, not_worse"),
    (lambda c: c.update(not_run="x"), "needs exactly one of `test`, `not_run`, `derived_from`"),
    (lambda c: c["test"].pop("metric"), "'metric' is a required property"),
    (lambda c: c.update(colour="red"), r"allowed keys: .*direction"),
])
def test_schema_errors_name_the_claim_and_the_problem(mutate, message):
    c = _claim()
    mutate(c)
    with pytest.raises(claims.ClaimsError, match=message):
        claims.validate_claims({"version": 1, "claims": [c]})


def test_duplicate_ids_and_unknown_derived_refs_are_errors():
    doc = {"version": 1, "claims": [_claim(), _claim(),
                                    {**_claim(id="V6-13"), "derived_from": ["V6-99"]}]}
    del doc["claims"][2]["test"]
    with pytest.raises(claims.ClaimsError) as err:
        claims.validate_claims(doc)
    assert "V6-1: id used 2 times" in str(err.value) and "unknown claim 'V6-99'" in str(err.value)


@pytest.mark.parametrize("direction, diff, ci, p_holm, margin, nan, expected", [
    ("higher", 0.05, (0.02, 0.08), 0.01, 0.01, 0, "replicated"),
    ("higher", 0.05, (0.02, 0.08), 0.01, 0.01, 1, "inconclusive"),        # method runs failed
    ("higher", -0.05, (-0.08, -0.02), 0.01, 0.01, 0, "not replicated"),   # significant, opposite
    ("higher", 0.001, (-0.004, 0.006), 0.5, 0.01, 0, "not replicated"),   # tight around 0
    ("higher", 0.01, (-0.03, 0.05), 0.5, 0.01, 0, "inconclusive"),
    ("lower", -0.4, (-0.5, -0.3), 0.001, 0.2, 0, "replicated"),
    ("lower", 0.4, (0.3, 0.5), 0.001, 0.2, 0, "not replicated"),
    ("equal", 0.001, (-0.004, 0.006), 0.6, 0.01, 0, "replicated"),
    ("equal", 0.05, (0.03, 0.07), 0.001, 0.01, 0, "not replicated"),
    ("equal", 0.01, (-0.02, 0.04), 0.4, 0.01, 0, "inconclusive"),
    ("not_worse", 0.0, (-0.005, 0.005), 0.9, 0.01, 0, "replicated"),
    ("not_worse", -0.05, (-0.07, -0.03), 0.001, 0.01, 0, "not replicated"),
    ("higher", math.nan, (math.nan, math.nan), math.nan, 0.01, 0, "inconclusive"),
])
def test_decide_rules(direction, diff, ci, p_holm, margin, nan, expected):
    verdict, why = claims.decide(direction, diff, ci, p_holm, margin, nan, higher_is_better=True)
    assert verdict == expected, why


def test_not_worse_follows_the_metric_orientation():
    # Perplexity: the method 0.5 *higher* (worse) beyond margin 0.1 -> not replicated.
    assert claims.decide("not_worse", 0.5, (0.4, 0.6), 0.001, 0.1, 0, higher_is_better=False)[0] == "not replicated"


@pytest.fixture
def tree(tmp_path):
    exp, res = build_tree(tmp_path)
    cfg = aggregate.load_experiment(exp)
    from optirep.report._io import write_json
    write_json(res / "aggregate" / "clf.json", aggregate.aggregate_task(cfg, res, "clf"))
    return tmp_path, exp, res


def _doc(*cs):
    return claims.validate_claims({"version": 1, "claims": list(cs)})


def test_evaluate_every_verdict_kind_end_to_end(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw"}
    cs = [
        _claim(id="V6-10", direction="lower", seed_value={"baseline": 9.83, "method": 9.41, "text": "x"},
               test={**t, "metric": "seed_effective_rank"}),
        _claim(id="V6-9", direction="lower", test={**t, "metric": "time_per_step_s"}),
        _claim(id="V6-1", test={**t, "metric": "final_test"}),
        _claim(id="V6-11", test={**t, "metric": "optimizer_state_bytes"}),
        _claim(id="V6-5", test={**t, "experiment": "absent", "metric": "final_test"}),
        _claim(id="V6-6", test={**t, "method": "nolabel", "metric": "final_test"}),
    ]
    nr = _claim(id="V6-3", not_run="needs CIFAR-100")
    del nr["test"]
    der = _claim(id="V6-13", derived_from=["V6-10", "V6-9"])
    del der["test"]
    doc = _doc(*cs, nr, der)
    out = claims.evaluate(doc, root / "results")
    v = {r["id"]: r for r in out["claims"]}
    assert v["V6-10"]["verdict"] == "replicated", v["V6-10"]["why"]
    assert v["V6-9"]["verdict"] == "not replicated" and "opposite" in v["V6-9"]["why"]
    assert v["V6-1"]["verdict"] == "inconclusive" and "diverged" in v["V6-1"]["why"]
    assert v["V6-1"]["n_method"] == 2 and v["V6-1"]["n_method_diverged"] == 1
    assert v["V6-11"]["verdict"] == "replicated" and v["V6-11"]["ratio"] == pytest.approx(2.0)
    assert v["V6-5"]["verdict"] == "not run" and "absent" in v["V6-5"]["why"]
    assert v["V6-6"]["verdict"] == "not run" and "'nolabel'" in v["V6-6"]["why"]
    assert v["V6-3"]["verdict"] == "not run" and v["V6-3"]["why"] == "needs CIFAR-100"
    assert v["V6-13"]["verdict"] == "not replicated"
    # Holm family = the 4 measured claims on synth/clf; the exact comparison keeps p = 0.
    assert v["V6-10"]["family_size"] == 4 and v["V6-10"]["p_holm"] >= v["V6-10"]["p"]
    assert v["V6-10"]["scale"] == "reduced scale, CPU" and v["V6-10"]["mean_baseline"] == pytest.approx(9.8266, abs=1e-3)
    assert out["counts"]["replicated"] == 2 and sum(out["counts"].values()) == out["n_claims"] == 8


def test_baseline_failed_when_the_gate_fails(tmp_path):
    exp, res = build_tree(tmp_path, gate_min=0.99)
    assert aggregate.main(["--experiment", str(exp), "--results", str(res), "--task", "clf"]) == 0
    doc = _doc(_claim(id="V6-10", direction="lower", test={"experiment": "synth", "task": "clf", "method": "bio",
                                                            "baseline": "adamw", "metric": "seed_effective_rank"}))
    cl = tmp_path / "claims.yaml"
    cl.write_text(yaml.safe_dump(doc))
    out = tmp_path / "claims.json"
    assert claims.main(["--claims", str(cl), "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())["claims"][0]
    assert rec["verdict"] == "baseline failed" and "min 0.99" in rec["why"]


def test_margin_defaults_to_half_the_seed_effect():
    m, rule = claims.margin_for(_claim(seed_value={"baseline": 100.0, "method": 110.0, "text": "x"}), 0.5)
    assert m == pytest.approx(0.025) and "half" in rule
    m, _ = claims.margin_for(_claim(seed_value={"text": "x"}), 2.0)
    assert m == pytest.approx(0.02)
    c = _claim()
    c["test"]["margin"] = {"absolute": 0.3}
    assert claims.margin_for(c, 5.0)[0] == 0.3


def test_cli_check_reports_invalid_file(tmp_path, capsys):
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "claims": [_claim(direction="sideways")]}))
    assert claims.main(["--claims", str(bad), "--check"]) == 2
    assert "sideways" in capsys.readouterr().err


def test_full_scale_block_and_baseline_task(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "seed_effective_rank"}
    # A second task holding the baseline (Planeswalker style: sum and multiplex are two tasks).
    (res / "aggregate" / "clf_sum.json").write_text((res / "aggregate" / "clf.json").read_text())
    cross = _claim(id="PW-1", direction="lower", test={**t, "baseline_task": "clf_sum"})
    gpu = _claim(id="V6-10", direction="lower", test=t,
                 full_scale={**t, "experiment": "full_synth"})
    nr = _claim(id="V6-3", direction="lower", not_run="needs CIFAR-100", full_scale={**t, "experiment": "full_synth"})
    del nr["test"]
    (root / "experiments" / "full_synth.yaml").write_text("name: full_synth\ngpu_estimate: >-\n  About 2\n  GPU-hours\n")
    doc = _doc(cross, gpu, nr)
    out = {r["id"]: r for r in claims.evaluate(doc, root / "results", experiments_dir=root / "experiments")["claims"]}
    assert out["PW-1"]["verdict"] == "replicated" and out["PW-1"]["baseline_task"] == "clf_sum"
    assert out["V6-10"]["full_scale"]["verdict"] == "not run"
    assert out["V6-3"]["verdict"] == "not run" and out["V6-3"]["gpu_estimate"] == "About 2 GPU-hours"
    # Once the GPU study has results, the full-scale verdict appears beside the CPU one.
    import shutil
    shutil.copytree(res, root / "results" / "full_synth")
    out = {r["id"]: r for r in claims.evaluate(doc, root / "results")["claims"]}
    assert out["V6-3"]["verdict"] == "not run" and out["V6-3"]["full_scale"]["verdict"] == "replicated"
    from optirep.report import latex, readme
    both = claims.evaluate(doc, root / "results")
    assert "At full scale: Ours" in latex.claims_section(both)
    assert "full scale (reduced scale, CPU): replicated" in readme.render(both)


def test_full_scale_cost_is_extrapolated_from_the_measured_step_times(tree):
    root, exp, res = tree
    t = {"experiment": "synth", "task": "clf", "method": "bio", "baseline": "adamw", "metric": "final_test"}
    full = {"name": "full_synth", "seeds": [0, 1, 2, 3, 4], "tuning": {"trials": 4},
            "tasks": {"big": {"dataset": "cifar10", "data_args": {"val_size": 5000}, "batch_size": 128, "epochs": 2,
                              "optimizers": ["adamw", "bio_tuned"]}},
            "optimizers": {"adamw": {"name": "adamw"}, "bio_tuned": {"name": "biostatis_v6", "tune": True}}}
    (root / "experiments" / "full_synth.yaml").write_text(yaml.safe_dump(full))
    doc = _doc(_claim(id="V6-1", test=t, full_scale={**t, "experiment": "full_synth", "task": "big"}))
    rec = claims.evaluate(doc, root / "results", experiments_dir=root / "experiments")["claims"][0]
    cost = rec["full_scale"]["cost"]
    # 45000 examples / 128 -> 352 steps per epoch, 2 epochs; 5 seeds + (5 seeds + 4 trials) runs.
    assert cost["steps_per_run"] == 704 and cost["runs"] == 14 and cost["examples"] == 14 * 704 * 128
    # Measured rate: mean time_per_step_s of synth/clf (six runs, 0.016 s) over its batch of 8.
    assert cost["s_per_example"] == pytest.approx(0.016 / 8)
    assert cost["cpu_hours"] == pytest.approx(14 * 704 * 128 * 0.016 / 8 / 3600)
    from optirep.report import latex
    assert "Full-scale cost: 14 runs" in latex.claims_section({"claims": [rec]})
