"""Equal-budget tuning that brackets the optimum: an LR sweep extended until its best point is interior,
then quasi-random search of the other hyperparameters around it, selected on the mean validation metric
over tuning seeds that are never final seeds.

    optirep tune-trial --experiment E --task T --optimizer L --lr-point K --out DIR          # one sweep point
    optirep bracket --experiment E --task T --optimizer L --round R --points DIR... [--previous F] [--match F] --out F
    optirep tune-trial --experiment E --task T --optimizer L --random J --sweep sweep.json --out DIR
    optirep select --experiment E --task T --optimizer L --sweep sweep.json --trials DIR... --out selected.json

Protocol (the experiment YAML's `tuning:` block, checked by `check_tuning`):

1. LR sweep. Grid point k has lr_k = lr_min * 10^(k / per_decade), k = 0..n-1 spanning the label's
   AlgoPerf search-space `lr` range (at least 7 points, half-decade or finer). The other hyperparameters sit
   at the label's `hp` value, else at the centre of their range (`base_hp`). After each round
   (`bracket_step`), a best point at an edge of the evaluated range extends the sweep by one grid point at
   that edge, until the best point is interior, the next point would cross the hard bound
   `lr_sweep.hard_min` / `hard_max`, or the label's `budget` (training runs, tuning seeds counted) would be
   exceeded; the record flags which one stopped it (`bound_hit`).
2. Effective-LR coverage. A label whose step is its lr times a known gain (`gain.keys`, diagnostics whose
   product is the gain, e.g. BiostatisV6's h_mean_mean x e_mean_mean) reports effective lr = lr x gain
   (measured, mean over its tuning seeds) and, with `gain.match: <label>`, is also extended until its
   effective interval covers the matched label's swept interval to within half a grid step.
3. Random search. `random_trials` scrambled-Halton points (AlgoPerf samples its spaces this way): lr
   log-uniform within one grid step of the sweep's best lr, every other search dimension over its range.
4. Selection. Every configuration (sweep points and random trials) is trained once per tuning seed; the one
   with the best mean `select_on` over the seeds wins. A configuration with a diverged seed never wins.

The test split is never read here. Every tuned label of an experiment gets the same grid size, random
trials, seeds and budget (`check_tuning`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

#: relative tolerance when a grid end meets a range end or a hard bound (floating-point noise)
_EPS = 1e-9


class TuningError(ValueError):
    """A tuning block, trial directory or record is invalid; the message names the file or field."""


# ----------------------------------------------------------------------------- search space
def sample_trials(search_space: dict, n: int, seed: int = 0) -> list[dict]:
    """`n` hyperparameter settings, one per trial, in a fixed order for a given `seed`.

    search_space: {name: {min, max, scaling: log|linear} | {feasible_points: [...]}} (AlgoPerf format).
    """
    if n <= 0:
        return []
    names = sorted(search_space)
    if not names:
        return [{} for _ in range(n)]
    from scipy.stats import qmc  # here, not at import: `optirep train` never needs scipy

    points = qmc.Halton(d=len(names), scramble=True, seed=seed).random(n)
    return [{name: _at(name, search_space[name], u) for name, u in zip(names, row)} for row in points]


def _at(name: str, dim: dict, u: float) -> Any:
    """The value at quantile u in [0, 1) of one AlgoPerf search dimension."""
    if "feasible_points" in dim:
        pts = dim["feasible_points"]
        return pts[min(int(u * len(pts)), len(pts) - 1)]
    lo, hi = float(dim["min"]), float(dim["max"])
    if dim.get("scaling", "log") == "log":
        if lo <= 0 or hi <= 0:
            raise TuningError(f"search_space.{name}: log scaling needs min, max > 0 (got {lo}, {hi})")
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    return float(lo + u * (hi - lo))


def base_hp(opt: dict) -> dict:
    """The hyperparameters held fixed during the LR sweep: `hp`, else the centre of each search dimension."""
    hp = dict(opt.get("hp") or {})
    for name, dim in (opt.get("search_space") or {}).items():
        if name != "lr" and name not in hp:
            hp[name] = _at(name, dim, 0.5)
    return hp


def lr_grid(opt: dict, per_decade: float) -> list[float]:
    """The initial sweep: lr_min * 10^(k / per_decade) for k = 0.. while <= lr_max."""
    dim = (opt.get("search_space") or {}).get("lr")
    if not dim or "min" not in dim or dim.get("scaling", "log") != "log":
        raise TuningError("search_space.lr must be {min, max, scaling: log} for the LR sweep")
    lo, hi = float(dim["min"]), float(dim["max"])
    if not 0 < lo < hi:
        raise TuningError(f"search_space.lr: need 0 < min < max (got {lo}, {hi})")
    n = int(math.floor(per_decade * math.log10(hi / lo) + _EPS)) + 1
    return [lr_at(lo, per_decade, k) for k in range(n)]


def lr_at(lr_min: float, per_decade: float, k: int) -> float:
    """Grid point k (negative k lie below the search-space minimum, after an extension)."""
    return float(lr_min * 10.0 ** (k / per_decade))


def hard_k(lr_min: float, per_decade: float, hard_min: float, hard_max: float) -> tuple[int, int]:
    """The range of grid indices inside the hard bounds [hard_min, hard_max]."""
    return (math.ceil(per_decade * math.log10(hard_min / lr_min) - _EPS),
            math.floor(per_decade * math.log10(hard_max / lr_min) + _EPS))


def tuned_labels(cfg: dict) -> list[str]:
    return [label for label, o in cfg["optimizers"].items() if o.get("tune")]


def check_tuning(cfg: dict) -> list[str]:
    """Problems with the protocol of an experiment (empty when fine), each naming the field."""
    labels = tuned_labels(cfg)
    t = cfg.get("tuning")
    if not labels:
        return []
    if not t:
        return [f"optimizers.{labels[0]}: tune: true needs a top-level `tuning:` block "
                f"(seeds, budget, lr_sweep, random_trials)"]
    problems = []
    overlap = sorted(set(t["seeds"]) & set(cfg["seeds"]))
    if overlap:
        problems.append(f"tuning.seeds {t['seeds']} overlap the final seeds {cfg['seeds']} at {overlap}: tuning "
                        f"seeds must be disjoint from the final seeds, or the selected setting is re-run on the "
                        f"seed it won on (winner's curse)")
    sweep = t["lr_sweep"]
    if not sweep["hard_min"] < sweep["hard_max"]:
        problems.append(f"tuning.lr_sweep: hard_min {sweep['hard_min']} must be below hard_max {sweep['hard_max']}")
    sizes = {}
    for label in labels:
        o = cfg["optimizers"][label]
        try:
            grid = lr_grid(o, sweep["per_decade"])
        except TuningError as exc:
            problems.append(f"optimizers.{label}.{exc}")
            continue
        sizes[label] = len(grid)
        if len(grid) < 7:
            problems.append(f"optimizers.{label}.search_space.lr: {grid[0]:g}..{grid[-1]:g} gives a {len(grid)}-point "
                            f"grid at {sweep['per_decade']:g} per decade; the sweep needs at least 7 points "
                            f"(widen the range to max/min >= 10^{6 / sweep['per_decade']:g})")
        if grid[0] < sweep["hard_min"] * (1 - _EPS) or grid[-1] > sweep["hard_max"] * (1 + _EPS):
            problems.append(f"optimizers.{label}.search_space.lr: {grid[0]:g}..{grid[-1]:g} leaves the hard bounds "
                            f"tuning.lr_sweep [{sweep['hard_min']:g}, {sweep['hard_max']:g}]")
        need = (len(grid) + t["random_trials"]) * len(t["seeds"])
        if need > t["budget"]:
            problems.append(f"tuning.budget {t['budget']} is below what {label} needs before any extension: "
                            f"({len(grid)} grid points + {t['random_trials']} random trials) x "
                            f"{len(t['seeds'])} seeds = {need} runs")
        gain = o.get("gain") or {}
        if gain.get("match"):
            m = gain["match"]
            mo = cfg["optimizers"].get(m)
            if mo is None or not mo.get("tune"):
                problems.append(f"optimizers.{label}.gain.match: {m!r} is not a tuned label "
                                f"(allowed values: {', '.join(x for x in labels if x != label)})")
            elif (mo.get("gain") or {}).get("match"):
                problems.append(f"optimizers.{label}.gain.match: {m!r} matches another label itself; "
                                f"chains of matches are not supported")
            else:
                for tname, task in cfg["tasks"].items():
                    if label in task["optimizers"] and m not in task["optimizers"]:
                        problems.append(f"optimizers.{label}.gain.match: {m!r} is not an optimizer of task "
                                        f"{tname!r}, where {label} is tuned")
    if len(set(sizes.values())) > 1:
        problems.append(f"tuned labels have LR grids of different sizes {sizes}: every tuned optimizer gets the "
                        f"same number of sweep points (give their search_space.lr the same span)")
    return problems


def max_points(t: dict) -> int:
    """Sweep points a label may train within the budget, leaving room for the random trials."""
    return t["budget"] // len(t["seeds"]) - t["random_trials"]


# ----------------------------------------------------------------------------- one configuration
def run_gain(run_dir: Path, keys: Sequence[str]) -> float:
    """Mean over a run's logged eval rows of the product of diagnostics `keys` (each row a mean over its interval).

    The effective-LR control (`optirep derive-hp`) and effective-LR reporting both use it.
    Raises KeyError naming the file and step when a row lacks a key.
    """
    run_dir = Path(run_dir)
    per_row = []
    from optirep.runio import read_jsonl  # a cut line is named (path:line)

    for r in read_jsonl(run_dir / "metrics.jsonl"):
        missing = [k for k in keys if k not in r.get("diag", {})]
        if missing:
            raise KeyError(f"{run_dir}/metrics.jsonl step {r.get('step')}: diagnostics lack {missing} "
                           f"(have: {', '.join(sorted(r.get('diag', {})))})")
        per_row.append(math.prod(r["diag"][k] for k in keys))
    if not per_row:
        raise KeyError(f"{run_dir}/metrics.jsonl has no logged diagnostics")
    return sum(per_row) / len(per_row)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def summarize_trial(trial_id: str, stage: str, hp: dict, seed_dirs: dict[int, Path],
                    gain_keys: Sequence[str] | None = None) -> dict:
    """One configuration over its tuning seeds: per-seed and mean final/best val, divergence, gain.

    `diverged` is True when any seed diverged or has no finite metric; its means are then NaN, so it never
    wins a selection. `gain` is the mean over seeds of `run_gain` (1 when the label has no gain keys).
    """
    seeds, per = sorted(seed_dirs), {}
    for s in seeds:
        mfile = Path(seed_dirs[s]) / "metrics.json"
        if not mfile.exists():
            raise TuningError(f"{mfile} does not exist: tuning seed {s} of {trial_id} did not finish")
        per[s] = json.loads(mfile.read_text())
    rec: dict[str, Any] = {"trial": trial_id, "stage": stage, "hp": hp, "lr": hp.get("lr"), "seeds": seeds,
                           "higher_is_better": per[seeds[0]]["higher_is_better"]}
    diverged = any(m.get("diverged") or not _finite(m.get("final_val")) for m in per.values())
    for key in ("final_val", "best_val"):
        vals = [per[s].get(key) for s in seeds]
        rec[f"{key}_seeds"] = [v if _finite(v) else math.nan for v in vals]
        rec[key] = math.nan if diverged else sum(vals) / len(vals)
    rec["diverged"] = diverged
    rec["wall_time_s"] = sum(m.get("wall_time_s") or 0.0 for m in per.values())
    gains = []
    if gain_keys:
        for s in seeds:
            try:
                gains.append(run_gain(seed_dirs[s], gain_keys))
            except KeyError:
                if not per[s].get("diverged"):
                    raise
    gain = sum(gains) / len(gains) if gains else (math.nan if gain_keys else 1.0)
    rec["gain"] = gain
    rec["effective_lr"] = rec["lr"] * gain if rec["lr"] is not None and math.isfinite(gain) else math.nan
    return rec


def score(rec: dict, select_on: str = "final_val") -> float:
    """Higher is better; -inf for a diverged or non-finite configuration."""
    v = rec.get(select_on)
    if rec.get("diverged") or not _finite(v):
        return -math.inf
    return v if rec["higher_is_better"] else -v


# ----------------------------------------------------------------------------- bracketing
def bracket_step(points: dict[int, float], k_bounds: tuple[int, int], max_points: int,
                 effective: dict[int, float] | None = None, cover: tuple[float, float] | None = None,
                 per_decade: float = 2.0) -> dict:
    """Decide whether to extend the LR sweep after one round.

    points: grid index k -> score (higher is better, -inf diverged) for a contiguous range of k.
    k_bounds: the smallest and largest k inside the hard bounds. max_points: the budget's cap on points.
    effective / cover: for a gain-matched label, k -> effective lr, and the matched label's swept
    effective interval (lo, hi) that this sweep must reach to within half a grid step.

    Returns {best_k, interior, edge ("lower" | "upper" | None), next: [k...], status ("extend" | "done"),
    bound_hit (None | "hard_min" | "hard_max" | "budget"), covered (None or bool)}. A best point at an edge
    adds one point beyond it; a missing coverage adds one point on the short side; a point outside
    k_bounds is never added (flagged hard_min / hard_max), nor one beyond `max_points` (flagged budget).
    """
    if not points:
        raise TuningError("bracket_step: no evaluated points")
    ks = sorted(points)
    if ks != list(range(ks[0], ks[-1] + 1)):
        raise TuningError(f"bracket_step: the evaluated grid indices {ks} are not contiguous")
    lo, hi = ks[0], ks[-1]
    # The best point; among equal scores the most central one (an all-diverged sweep extends downwards).
    best = max(ks, key=lambda k: (points[k], -abs(k - (lo + hi) / 2), -k))
    if points[best] == -math.inf:
        best = lo
    edge = "lower" if best == lo else "upper" if best == hi else None
    want: list[tuple[int, str]] = []
    if edge == "lower":
        want.append((lo - 1, "hard_min"))
    elif edge == "upper":
        want.append((hi + 1, "hard_max"))
    covered = None
    if effective is not None and cover is not None:
        tol = 10.0 ** (0.5 / per_decade)
        eff = [effective[k] for k in ks if _finite(effective.get(k))]
        short_lo = not eff or min(eff) > cover[0] * tol
        short_hi = not eff or max(eff) < cover[1] / tol
        covered = not (short_lo or short_hi)
        if short_lo and (lo - 1, "hard_min") not in want:
            want.append((lo - 1, "hard_min"))
        if short_hi and (hi + 1, "hard_max") not in want:
            want.append((hi + 1, "hard_max"))
    nxt, bound_hit = [], None
    for k, bound in want:
        if not k_bounds[0] <= k <= k_bounds[1]:
            bound_hit = bound_hit or bound
        elif len(ks) + len(nxt) + 1 > max_points:
            bound_hit = bound_hit or "budget"
        else:
            nxt.append(k)
    return {"best_k": best, "interior": edge is None, "edge": edge, "next": nxt,
            "status": "extend" if nxt else "done", "bound_hit": None if nxt else bound_hit, "covered": covered}


def bracket_round(cfg: dict, label: str, trials: list[dict], match: dict | None = None) -> dict:
    """The record of one bracketing round from this label's evaluated sweep points (`summarize_trial` dicts)."""
    t = cfg["tuning"]
    o = cfg["optimizers"][label]
    sweep = t["lr_sweep"]
    lr_min = float(o["search_space"]["lr"]["min"])
    by_k = {}
    for rec in trials:
        k = int(rec["trial"].rsplit("k", 1)[1])
        by_k[k] = {**rec, "k": k}
    cover = None
    if (o.get("gain") or {}).get("match"):
        if match is None:
            raise TuningError(f"optimizers.{label}.gain.match: the matched label's sweep record is needed (--match)")
        cover = tuple(match["effective_interval"])
    dec = bracket_step({k: score(r, t["select_on"]) for k, r in by_k.items()},
                       hard_k(lr_min, sweep["per_decade"], sweep["hard_min"], sweep["hard_max"]), max_points(t),
                       effective={k: r["effective_lr"] for k, r in by_k.items()} if cover else None,
                       cover=cover, per_decade=sweep["per_decade"])
    pts = [by_k[k] for k in sorted(by_k)]
    eff = [r["effective_lr"] for r in pts if _finite(r["effective_lr"])]
    best = by_k[dec["best_k"]]
    return {
        "label": label, "per_decade": sweep["per_decade"], "lr_min": lr_min,
        "hard_bounds": [sweep["hard_min"], sweep["hard_max"]], "budget": t["budget"],
        "initial_points": len(lr_grid(o, sweep["per_decade"])),
        **dec, "best": {"trial": best["trial"], "lr": best["lr"], "effective_lr": best["effective_lr"],
                        "gain": best["gain"], t["select_on"]: best[t["select_on"]]},
        "lr_interval": [pts[0]["lr"], pts[-1]["lr"]],
        "effective_interval": [min(eff), max(eff)] if eff else [math.nan, math.nan],
        "match": (o.get("gain") or {}).get("match"), "points": pts,
    }


def random_trials(cfg: dict, label: str, best_lr: float) -> list[dict]:
    """The quasi-random trials around the sweep's best lr (lr within one grid step; other dims their range)."""
    t, o = cfg["tuning"], cfg["optimizers"][label]
    step = 10.0 ** (1.0 / t["lr_sweep"]["per_decade"])
    space = {**o["search_space"], "lr": {"min": best_lr / step, "max": best_lr * step, "scaling": "log"}}
    fixed = {k: v for k, v in (o.get("hp") or {}).items() if k not in space}
    return [{**fixed, **hp} for hp in sample_trials(space, t["random_trials"], t.get("sampler_seed", 0))]


def select(sweep: dict, trials: list[dict], select_on: str = "final_val") -> dict:
    """The selected configuration among the sweep points and the random trials (mean over tuning seeds)."""
    pool = list(sweep["points"]) + list(trials)
    best = max(pool, key=lambda r: score(r, select_on))
    if score(best, select_on) == -math.inf:
        raise TuningError(f"every tuning configuration of {sweep['label']} diverged or has no finite {select_on}")
    return {
        "trial": best["trial"], "stage": best["stage"], "hp": best["hp"], "select_on": select_on,
        "value": best[select_on], "values": best[f"{select_on}_seeds"], "seeds": best["seeds"],
        "lr": best["lr"], "gain": best["gain"], "effective_lr": best["effective_lr"],
        "bracket": {k: sweep[k] for k in ("interior", "edge", "bound_hit", "covered", "lr_interval",
                                          "effective_interval", "initial_points", "match", "hard_bounds")},
        "n_sweep_points": len(sweep["points"]), "n_extensions": len(sweep["points"]) - sweep["initial_points"],
        "budget": sweep["budget"], "runs": sum(len(r["seeds"]) for r in pool),
        "trials": [{k: r[k] for k in ("trial", "stage", "hp", "lr", "effective_lr", select_on, "diverged")}
                   for r in pool],
    }


def simulate(objective: Callable[[float], float], cfg: dict, label: str, max_rounds: int = 100) -> dict:
    """Run the bracketing rounds on a synthetic objective lr -> score (tests; no training)."""
    o, t = cfg["optimizers"][label], cfg["tuning"]
    lr_min, pd = float(o["search_space"]["lr"]["min"]), t["lr_sweep"]["per_decade"]
    ks = list(range(len(lr_grid(o, pd))))
    for _ in range(max_rounds):
        trials = [{"trial": f"lr/k{k}", "stage": "lr_sweep", "lr": lr_at(lr_min, pd, k), "hp": {},
                   "final_val": objective(lr_at(lr_min, pd, k)), "higher_is_better": True, "diverged": False,
                   "gain": 1.0, "effective_lr": lr_at(lr_min, pd, k), "seeds": t["seeds"]} for k in ks]
        rec = bracket_round(cfg, label, trials)
        if rec["status"] == "done":
            return rec
        ks = sorted(ks + rec["next"])
    raise TuningError(f"no decision after {max_rounds} rounds")
