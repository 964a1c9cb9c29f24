"""A synthetic results tree with known numbers, shared by the report tests (and checked here).

Experiment `synth`, task `clf` (accuracy), labels `adamw` (baseline, gate min 0.5) and `bio`,
3 seeds each; bio's seed 2 diverged. Values are chosen so every statistic is known in closed form.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

SEEDS = [0, 1, 2]
FINAL_TEST = {"adamw": [0.80, 0.82, 0.84], "bio": [0.90, 0.91, math.nan]}
BEST_VAL = {"adamw": [0.79, 0.81, 0.83], "bio": [0.89, 0.90, math.nan]}
TIME = {"adamw": [0.010, 0.011, 0.012], "bio": [0.020, 0.021, 0.022]}
STATE = {"adamw": 2000, "bio": 4000}
ERANK = {"adamw": [9.8, 9.85, 9.83], "bio": [9.4, 9.45, 9.41]}


def experiment(gate_min: float = 0.5, name: str = "synth") -> dict:
    return {
        "name": name, "scale": "reduced scale, CPU", "seeds": SEEDS,
        "tuning": {"trials": 3, "select_on": "final_val", "seed": 0},
        "tasks": {"clf": {"dataset": "digits8", "model": "mlp", "objective": "classification",
                          "batch_size": 8, "steps": 40, "metric": "accuracy",
                          "gate": {"optimizer": "adamw", "min": gate_min},
                          "optimizers": ["adamw", "bio"]}},
        "optimizers": {"adamw": {"name": "adamw", "hp": {"lr": 1e-3}},
                       "bio": {"name": "biostatis_v6", "hp": {"lr": 1e-3}}},
    }


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, allow_nan=True))


def build_tree(root: Path, gate_min: float = 0.5, name: str = "synth") -> tuple[Path, Path]:
    """Write experiments YAML + results/<name>/ under root; return (yaml path, results dir)."""
    cfg = experiment(gate_min, name)
    exp = root / "experiments" / f"{name}.yaml"
    exp.parent.mkdir(parents=True, exist_ok=True)
    exp.write_text(yaml.safe_dump(cfg))
    res = root / "results" / name
    for label in ("adamw", "bio"):
        for i, seed in enumerate(SEEDS):
            run = res / "runs" / "clf" / label / f"seed{seed}"
            ft, bv = FINAL_TEST[label][i], BEST_VAL[label][i]
            diverged = math.isnan(ft)
            _dump(run / "metrics.json", {
                "experiment": name, "scale": cfg["scale"], "task": "clf", "label": label,
                "optimizer": cfg["optimizers"][label]["name"], "seed": seed, "hp": {"lr": 1e-3},
                "metric": "accuracy", "higher_is_better": True, "final_test": ft, "final_val": bv,
                "best_val": bv, "best_val_step": 40, "final_train_loss": 0.3, "steps": 40,
                "diverged": diverged, "diverged_step": 20 if diverged else None, "wall_time_s": 1.0,
                "time_per_step_s": TIME[label][i], "time_per_opt_step_s": TIME[label][i] / 2,
                "peak_memory_bytes": 10**6, "optimizer_state_bytes": STATE[label], "diagnostics": {},
                "extra": {}, "versions": {"torch": "x"}, "git_sha": "abc", "device": "cpu"})
            # Curve: linear rise from 0.1 to best_val at step 40 (NaN after step 20 when diverged).
            lines = []
            for k, step in enumerate((10, 20, 30, 40)):
                v = 0.1 + (bv - 0.1) * (k + 1) / 4 if not diverged else (0.3 if step <= 20 else math.nan)
                lines.append(json.dumps({"step": step, "train_loss": 1.0 / (k + 1), "val_metric": v,
                                         "lr": 1e-3, "wall_time_s": 0.1 * step}, allow_nan=True))
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            _dump(res / "analysis" / "clf" / label / f"seed{seed}.json",
                  {"seed_effective_rank": ERANK[label][i], "seed_top5_concentration": 0.5 + 0.01 * i})
        tdir = res / "tune" / "clf" / label
        for k, lr in enumerate((1e-4, 1e-3, 1e-2)):
            _dump(tdir / f"trial{k}" / "metrics.json",
                  {"hp": {"lr": lr}, "final_val": 0.5 + 0.1 * k if k < 2 or label == "adamw" else math.nan,
                   "best_val": 0.5 + 0.1 * k, "diverged": k == 2 and label == "bio", "wall_time_s": 0.5})
        _dump(tdir / "selected.json", {"hp": {"lr": 1e-3}, "trial": 1, "val": 0.6})
    return exp, res


def test_fixture_tree_is_complete(tmp_path):
    exp, res = build_tree(tmp_path)
    assert yaml.safe_load(exp.read_text())["tasks"]["clf"]["gate"]["optimizer"] == "adamw"
    assert len(list((res / "runs" / "clf").glob("*/seed*/metrics.json"))) == 6
    assert json.loads((res / "runs/clf/bio/seed2/metrics.json").read_text(), parse_constant=str)["diverged"] is True
