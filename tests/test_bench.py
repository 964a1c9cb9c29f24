"""Smoke test of the optimizer step benchmark (`make bench`): one tiny shape set, one timed step.

    python -m pytest -q tests/test_bench.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from optirep import optim

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "optim_step.py"


def _bench():
    spec = importlib.util.spec_from_file_location("optim_step", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_json_has_a_row_per_optimizer(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = _bench().main(["--shapes", "tiny", "--repeats", "1", "--warmup", "1", "--threads", "1",
                            "--json", str(out), "--quiet"])
    data = json.loads(out.read_text())
    assert data["meta"]["repeats"] == 1
    rows = {r["optimizer"]: r for r in data["rows"]}
    assert sorted(rows) == optim.available()
    assert len(data["rows"]) == len(optim.available())
    for name, r in rows.items():
        assert r["median_s"] > 0 and r["ratio"] > 0, name
        assert r["reference"] == ("sgd" if optim.spec(name).baseline == "sgd" else "adamw")
        assert r["closure"] == optim.spec(name).needs_closure
    # torch AdamW keeps exp_avg and exp_avg_sq (2 x params) plus a step scalar per tensor.
    assert 2.0 <= rows["adamw"]["state_per_param_byte"] < 2.5
    assert rows["sgd"]["state_per_param_byte"] >= 1.0  # momentum buffer
    base = data["results"]["tiny"]["baselines"]
    assert {base["adamw"]["impl"], base["sgd"]["impl"]} <= {"foreach", "for-loop"}
    printed = capsys.readouterr().out
    assert "| optimizer |" in printed and "adamw" in printed
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
