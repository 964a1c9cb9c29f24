"""The tuning protocol's decisions on synthetic objectives (no training): the LR sweep brackets the optimum
when it is inside the grid, extends at the lower or upper edge until it is interior, stops at a hard bound or
the budget and says so; gain-matched sweeps extend to cover the matched effective interval; tuning seeds
never overlap final seeds.

    python -m pytest -q tests/test_tuning.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from optirep import config, tuning

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _cfg(budget: int = 40, hard=(1e-6, 10.0), lr=(1e-4, 1e-1)) -> dict:
    return {
        "seeds": [0, 1, 2],
        "tuning": {"seeds": [100, 101], "budget": budget, "random_trials": 2, "select_on": "final_val",
                   "lr_sweep": {"per_decade": 2, "hard_min": hard[0], "hard_max": hard[1]}},
        "optimizers": {"opt": {"name": "adamw", "tune": True,
                               "search_space": {"lr": {"min": lr[0], "max": lr[1], "scaling": "log"}}}},
    }


def bowl(opt_lr: float):
    """A unimodal validation score peaking at `opt_lr` (log-quadratic)."""
    return lambda lr: 1.0 - (math.log10(lr) - math.log10(opt_lr)) ** 2


def test_grid_is_half_decade_and_has_seven_points():
    grid = tuning.lr_grid(_cfg()["optimizers"]["opt"], 2)
    assert grid == pytest.approx([1e-4 * 10 ** (k / 2) for k in range(7)])


def test_optimum_inside_is_bracketed_without_extension():
    rec = tuning.simulate(bowl(3.2e-3), _cfg(), "opt")
    assert rec["interior"] and rec["bound_hit"] is None and rec["status"] == "done"
    assert len(rec["points"]) == rec["initial_points"] == 7
    assert rec["best"]["lr"] == pytest.approx(10 ** -2.5)


def test_optimum_below_the_lower_edge_extends_down_until_interior():
    rec = tuning.simulate(bowl(1e-5), _cfg(), "opt")
    assert rec["interior"] and rec["bound_hit"] is None
    assert rec["best"]["lr"] == pytest.approx(1e-5)
    ks = [p["k"] for p in rec["points"]]
    assert ks == list(range(-3, 7)), "two points to reach the optimum, one more to see it is a maximum"


def test_optimum_above_the_upper_edge_extends_up_until_interior():
    rec = tuning.simulate(bowl(1.0), _cfg(), "opt")
    assert rec["interior"] and rec["best"]["lr"] == pytest.approx(1.0)
    assert [p["k"] for p in rec["points"]] == list(range(0, 10))


def test_optimum_beyond_a_hard_bound_stops_there_and_is_flagged():
    rec = tuning.simulate(bowl(100.0), _cfg(hard=(1e-6, 1.0)), "opt")
    assert not rec["interior"] and rec["edge"] == "upper" and rec["bound_hit"] == "hard_max"
    assert rec["best"]["lr"] == pytest.approx(1.0) and rec["points"][-1]["lr"] == pytest.approx(1.0)
    low = tuning.simulate(bowl(1e-9), _cfg(hard=(3e-5, 10.0)), "opt")
    assert low["edge"] == "lower" and low["bound_hit"] == "hard_min"
    assert low["points"][0]["lr"] >= 3e-5 * (1 - 1e-9) and low["points"][0]["lr"] < 3e-5 * 10 ** 0.5


def test_the_budget_caps_the_extension_and_is_flagged():
    # budget 20 = (8 points + 2 random trials) x 2 seeds: one extension point, then the budget stops it.
    rec = tuning.simulate(bowl(1e-8), _cfg(budget=20), "opt")
    assert len(rec["points"]) == 8 and rec["bound_hit"] == "budget" and rec["edge"] == "lower"


def test_a_diverged_sweep_extends_towards_smaller_learning_rates():
    dec = tuning.bracket_step({k: -math.inf for k in range(7)}, (-10, 10), 20)
    assert dec["next"] == [-1] and dec["status"] == "extend"


def test_non_contiguous_points_are_an_error():
    with pytest.raises(tuning.TuningError, match="not contiguous"):
        tuning.bracket_step({0: 1.0, 2: 2.0}, (-10, 10), 20)


def test_gain_matched_sweep_extends_to_cover_the_matched_effective_interval():
    # Interior optimum, but a gain of 4 (0.6 decades) leaves the matched interval's lower end uncovered.
    scores = {k: -abs(k - 3) for k in range(7)}
    eff = {k: 4.0 * 1e-4 * 10 ** (k / 2) for k in range(7)}
    dec = tuning.bracket_step(scores, (-20, 20), 30, effective=eff, cover=(1e-4, 1e-1), per_decade=2)
    assert dec["interior"] and dec["covered"] is False and dec["next"] == [-1]
    eff[-1] = 4.0 * 1e-4 * 10 ** -0.5  # 1.26e-4: within half a grid step of 1e-4
    scores[-1] = -4
    dec = tuning.bracket_step(scores, (-20, 20), 30, effective=eff, cover=(1e-4, 1e-1), per_decade=2)
    assert dec["covered"] is True and dec["status"] == "done"
    # a gain of 1.28 (V6 on CIFAR) is within half a step already: no extra run
    eff = {k: 1.28 * 1e-4 * 10 ** (k / 2) for k in range(7)}
    assert tuning.bracket_step(scores | {-1: -9}, (-20, 20), 30, effective=eff | {-1: 1.28e-4 * 10 ** -0.5},
                               cover=(1e-4, 1e-1))["covered"] is True


def test_selection_uses_the_mean_over_tuning_seeds_and_never_a_diverged_configuration():
    def rec(trial, vals, diverged=False):
        return {"trial": trial, "stage": "lr_sweep", "hp": {"lr": 1e-3}, "lr": 1e-3, "gain": 1.0, "effective_lr": 1e-3,
                "seeds": [100, 101], "final_val_seeds": vals, "final_val": math.nan if diverged else sum(vals) / 2,
                "diverged": diverged, "higher_is_better": True}
    sweep = {"label": "opt", "points": [rec("lr/k0", [0.9, 0.5]), rec("lr/k1", [0.72, 0.72])], "interior": True,
             "edge": None, "bound_hit": None, "covered": None, "lr_interval": [1e-3, 1e-3],
             "effective_interval": [1e-3, 1e-3], "initial_points": 2, "match": None, "hard_bounds": [1e-6, 1],
             "budget": 8}
    chosen = tuning.select(sweep, [rec("random/trial0", [0.99, math.nan], diverged=True)])
    assert chosen["trial"] == "lr/k1" and chosen["value"] == pytest.approx(0.72) and chosen["runs"] == 6


def test_tuning_seeds_never_overlap_final_seeds(tmp_path):
    """Every study file keeps them disjoint, and an overlap is refused with the seeds named."""
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or "tuning" not in doc:
            continue
        assert not set(doc["tuning"]["seeds"]) & set(doc["seeds"]), path.name
        assert len(doc["tuning"]["seeds"]) >= 2, path.name
    doc = yaml.safe_load((EXPERIMENTS / "smoke.yaml").read_text())
    doc["tuning"]["seeds"] = [1, 100]
    bad = tmp_path / "overlap.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(config.ConfigError, match=r"(?s)overlap\.yaml.*tuning\.seeds \[1, 100\] overlap the final seeds "
                                                 r"\[0, 1\] at \[1\]: tuning seeds must be disjoint"):
        config.load_experiment(bad)
