"""Smoke test of the optimizer step benchmark (`make bench`): one tiny shape set, one timed step.

    python -m pytest -q tests/test_bench.py
"""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import torch

from optirep import optim

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "optim_step.py"


def _bench():
    spec = importlib.util.spec_from_file_location("optim_step", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_json_has_a_row_per_candidate(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench = _bench()
    result = bench.main(["--shapes", "tiny", "--rounds", "2", "--repeats", "1", "--warmup", "1", "--threads", "1",
                         "--json", str(out), "--quiet", "--optimizers", "adamw", "sgd", "biostatis_v6",
                         "neuroplastic", "enhanced_sgd", "--compile", "both"])
    data = json.loads(out.read_text())
    assert data["meta"]["rounds"] == 2 and data["meta"]["repeats"] == 1
    rows = {r["optimizer"]: r for r in data["rows"]}
    torch_rows = [f"torch {f} [{i}]" for f in ("adamw", "sgd") for i in ("for-loop", "foreach", "fused")]
    assert sorted(rows) == sorted(torch_rows + ["adamw", "sgd", "biostatis_v6", "biostatis_v6[compile=False]",
                                                "neuroplastic", "neuroplastic[compile=False]", "enhanced_sgd",
                                                bench.NOISE_LABEL])
    for name, r in rows.items():
        assert len(r["block_medians_s"]) == 2 and r["median_s"] > 0 and r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"]
        if r["registry"]:
            assert r["reference"] == ("sgd" if optim.spec(r["registry"]).baseline == "sgd" else "adamw"), name
            assert r["closure"] == optim.spec(r["registry"]).needs_closure
    # each torch implementation runs the path its label names; tiny groups stay off the compiled path
    for f in ("adamw", "sgd"):
        for impl in ("for-loop", "foreach", "fused"):
            assert rows[f"torch {f} [{impl}]"]["path"] == impl
    assert rows["biostatis_v6"]["path"] == rows["biostatis_v6[compile=False]"]["path"] == "foreach"
    # the reference of a family is its fastest implementation; its own ratio is 1 in every round
    ref = data["results"]["tiny"]["references"]["adamw"]
    assert ref["median_s"] == min(ref["all"].values())
    assert rows[f"torch adamw [{ref['impl']}]"]["ratio"] == 1.0
    # targets: V6 and NeuroPlastic against fused AdamW, EnhancedSGD against fused SGD (marked, not asserted)
    assert (rows["biostatis_v6"]["target_ref"], rows["biostatis_v6"]["target_max"]) == ("fused adamw", 1.5)
    assert (rows["neuroplastic"]["target_ref"], rows["neuroplastic"]["target_max"]) == ("fused adamw", 1.3)
    assert (rows["enhanced_sgd"]["target_ref"], rows["enhanced_sgd"]["target_max"]) == ("fused sgd", 4.0)
    assert "target_max" not in rows["adamw"]
    # the floor each algorithm sets: memory traffic for V6 / NeuroPlastic, the noise draw (its own row) for ESGD
    assert (v6f := rows["biostatis_v6"])["floor_kind"] == "traffic" and v6f["floor_ratio"] == 2.0
    assert rows["neuroplastic"]["floor_ratio"] == 15 / 7
    noise = rows[bench.NOISE_LABEL]
    assert noise["reference"] == "sgd" and noise["path"] == "normal_" and noise["registry"] is None
    esgd = rows["enhanced_sgd"]
    fused_sgd = rows["torch sgd [fused]"]["block_medians_s"]
    assert esgd["floor_kind"] == "noise"
    assert esgd["floor_ratio"] == statistics.median(a / b for a, b in zip(noise["block_medians_s"], fused_sgd))
    assert "floor_ratio" not in rows["adamw"]
    fused_blocks = rows["torch adamw [fused]"]["block_medians_s"]
    v6 = rows["biostatis_v6"]
    assert v6["target_ratio"] == statistics.median(a / b for a, b in zip(v6["block_medians_s"], fused_blocks))
    assert v6["target_met"] == (v6["target_ratio"] <= 1.5)
    # torch AdamW keeps exp_avg and exp_avg_sq (2 x params) plus a step scalar per tensor.
    assert 2.0 <= rows["adamw"]["state_per_param_byte"] < 2.5
    assert rows["sgd"]["state_per_param_byte"] >= 1.0  # momentum buffer
    assert v6["first_step_s"] > 0
    printed = capsys.readouterr().out
    assert "| optimizer | path |" in printed and ("**met**" in printed or "missed" in printed)
    assert result["rows"] == data["rows"]


def test_shape_sets_have_the_published_parameter_counts():
    bench = _bench()
    count = lambda shapes: sum(torch.Size(s).numel() for s in shapes)  # noqa: E731
    assert count(bench.gpt2_shapes()) == 85_056_000            # 12 x 7,087,872 + ln_f
    assert count(bench.gpt2_shapes(embeddings=True)) == 124_439_808  # GPT-2 small, tied head
    assert count(bench.resnet18_shapes()) == 11_689_512


def test_state_bytes_counts_each_tensor_once():
    bench = _bench()
    t = torch.zeros(10)
    assert bench.tensor_bytes({"a": t, "b": [t, torch.zeros(5, dtype=torch.float64)]}) == 40 + 40


def test_esgd_breakdown_runs_on_tiny_shapes(capsys):
    path = BENCH.with_name("esgd_breakdown.py")
    spec = importlib.util.spec_from_file_location("esgd_breakdown", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--shapes", "tiny", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "histc, 100 bins" in out and "`enhanced_sgd_noclosure` step" in out


def test_fastpath_ab_runs_on_tiny_shapes(capsys):
    path = BENCH.with_name("fastpath_ab.py")
    spec = importlib.util.spec_from_file_location("fastpath_ab", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--shapes", "tiny", "--repeats", "1", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "| biostatis_v6 |" in out and "| enhanced_sgd_noclosure |" in out
    from optirep.optim import biostatis, enhanced_sgd
    assert biostatis.alias_1d is mod.FAST["alias"][0] and enhanced_sgd.histc_counts is mod.FAST["hist"]  # restored
