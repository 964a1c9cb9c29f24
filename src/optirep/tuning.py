"""Equal-budget tuning: quasi-random trials from an AlgoPerf-format search space, selection on val.

    optirep select --experiment experiments/X.yaml --task T --optimizer L --trials DIR... --out selected.json

Every tuned optimizer, the baselines included, gets the same number of trials drawn from a
scrambled Halton sequence (as AlgoPerf samples its search spaces), and the trial with the best
validation metric is rerun with the final seeds. The test split is never read here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def sample_trials(search_space: dict, n: int, seed: int = 0) -> list[dict]:
    """`n` hyperparameter settings, one per trial, in a fixed order for a given `seed`.

    search_space: {name: {min, max, scaling: log|linear} | {feasible_points: [...]}}.
    """
    if n <= 0:
        return []
    names = sorted(search_space)
    if not names:
        return [{} for _ in range(n)]
    from scipy.stats import qmc  # here, not at import: `optirep train` without --trial never needs scipy

    points = qmc.Halton(d=len(names), scramble=True, seed=seed).random(n)
    trials = []
    for row in points:
        hp = {}
        for name, u in zip(names, row):
            dim = search_space[name]
            if "feasible_points" in dim:
                pts = dim["feasible_points"]
                hp[name] = pts[min(int(u * len(pts)), len(pts) - 1)]
            elif dim.get("scaling", "log") == "log":
                lo, hi = float(dim["min"]), float(dim["max"])
                if lo <= 0 or hi <= 0:
                    raise ValueError(f"search_space.{name}: log scaling needs min, max > 0 (got {lo}, {hi})")
                hp[name] = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
            else:
                lo, hi = float(dim["min"]), float(dim["max"])
                hp[name] = float(lo + u * (hi - lo))
        trials.append(hp)
    return trials


def select(trial_dirs: list[Path], select_on: str = "final_val") -> dict:
    """The best trial by validation metric; diverged or unfinished trials never win."""
    rows = []
    for d in trial_dirs:
        mfile = Path(d) / "metrics.json"
        if not mfile.exists():
            raise FileNotFoundError(f"trial {d} has no metrics.json (not finished)")
        m = json.loads(mfile.read_text())
        rows.append((d, m))
    if not rows:
        raise ValueError("no trials to select from")
    higher = rows[0][1]["higher_is_better"]

    def score(m):
        v = m.get(select_on)
        if m.get("diverged") or v is None or not math.isfinite(v):
            return -math.inf
        return v if higher else -v

    best_dir, best = max(rows, key=lambda r: score(r[1]))
    if score(best) == -math.inf:
        raise RuntimeError(f"every trial diverged or produced no finite {select_on}: {[str(d) for d, _ in rows]}")
    return {
        "hp": best["hp"], "trial_dir": str(best_dir), "select_on": select_on, "value": best[select_on],
        "trials": [{"dir": str(d), "hp": m["hp"], select_on: m.get(select_on), "diverged": m.get("diverged", False)}
                   for d, m in rows],
    }
