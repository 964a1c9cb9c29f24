"""`optirep train --stop-after N` then a rerun logs the same optimizer diagnostics as an uninterrupted run
(the diagnostics' running sums and step counters travel in the optimizer's state_dict)."""

from __future__ import annotations

import json

import pytest

from optirep import cli
from test_train import EXPERIMENT, write_experiment

LABELS = {
    "bio_v6": {"name": "biostatis_v6", "hp": {"lr": 3.0e-3, "diag_every": 5}},
    "bio_np": {"name": "neuroplastic", "hp": {"lr": 0.1, "warmup_epochs": 2, "plasticity_scale": 2.0, "diag_every": 5}},
    "bio_esgd": {"name": "enhanced_sgd", "hp": {"lr": 0.01, "seed": 0}},
}


def _rows(path):
    """metrics.jsonl rows without the wall clock, as JSON text (NaN compares equal to NaN)."""
    return [json.dumps({k: v for k, v in json.loads(line).items() if k != "wall_time_s"}, sort_keys=True)
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("label", sorted(LABELS))
def test_stop_after_then_rerun_logs_identical_diagnostics(tmp_path, label):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"].update(LABELS)
    cfg["tasks"]["mnist1d_mlp"]["optimizers"] += sorted(LABELS)
    exp = write_experiment(tmp_path, cfg)

    def train(out, *extra):
        return cli.main(["train", "--experiment", str(exp), "--task", "mnist1d_mlp", "--optimizer", label,
                         "--seed", "0", "--out", str(tmp_path / out), "--quiet", "--set", "task.checkpoint_every=4",
                         *extra])

    assert train("full") == 0
    assert train("part", "--stop-after", "13") == 0  # between the evals at 8 and 16, after the checkpoint at 12
    assert not (tmp_path / "part" / "metrics.json").exists()
    assert train("part") == 0
    full, part = _rows(tmp_path / "full" / "metrics.jsonl"), _rows(tmp_path / "part" / "metrics.jsonl")
    assert full == part
    assert all(json.loads(r)["diag"] for r in full), "every log row carries diagnostics"
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "part"))
    assert a["diagnostics"] and json.dumps(a["diagnostics"], sort_keys=True) == json.dumps(b["diagnostics"], sort_keys=True)
