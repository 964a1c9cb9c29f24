"""Per-task statistics over the final runs of one experiment, computed once into JSON.

    optirep aggregate --experiment experiments/X.yaml --results results/X --task T \
        --out results/X/aggregate/T.json

Reads `runs/<T>/<label>/<spec>/seed<s>/metrics.json` (plus `metrics.jsonl` curves and, when present,
`analysis/<T>/<label>/seed<s>.json` and `tune/<T>/<label>/<spec>/`), and writes per label: summaries of
every scalar metric, the diverged runs, time-to-target, the learning curves and the tuning trials;
then every non-baseline label against the baseline (Welch, Hedges' g, Holm across the task) and the
baseline sanity gate. Everything downstream (tables, figures, claims, README) only reads this file.

Conventions (see docs/DESIGN.md):
* The baseline label is the task's `gate.optimizer`; without a gate, the first label of the task.
* A diverged run keeps its place with NaN metrics (`null` in the JSON): it is counted in
  `n_diverged`, its summary has `n_nan`, and comparisons say how many runs they could use.
* A seed listed in the experiment without a finished run (no metrics.json) is listed in `missing`.
* Target = the median `best_val` of the baseline over its seeds (AlgoPerf); a run that never
  reaches it has step/seconds `null` (a miss, "infinite" time).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from optirep.analysis.stats import failure_reason, hedges_g, holm, paired_wins, summarize, time_to_target, welch
from optirep.config import HIGHER_IS_BETTER, label_dir, load_yaml
from optirep.report._io import as_float, read_json, write_json
from optirep.runio import TRIAL_SCHEMA, read_record

ALPHA = 0.05

# Scalar keys of metrics.json summarised per label (others are copied from the first run).
RUN_METRICS = (
    "final_test", "final_val", "best_val", "best_val_step", "final_train_loss",
    "wall_time_s", "time_per_step_s", "time_per_opt_step_s", "peak_memory_bytes",
    "optimizer_state_bytes",
)


class AggregateError(ValueError):
    """The results tree or the experiment file cannot be aggregated; the message names the path."""


def load_experiment(path: str | Path) -> dict:
    """The experiment YAML as a dict (shape checks live in optirep.config; here only what we use)."""
    path = Path(path)
    if not path.exists():
        raise AggregateError(f"experiment file {path} does not exist")
    try:
        cfg = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise AggregateError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict) or "tasks" not in cfg:
        raise AggregateError(f"{path}: not an experiment YAML (needs top-level keys name, scale, seeds, tasks)")
    return cfg


def baseline_label(task_cfg: dict) -> str:
    """The label every other label is compared with: gate.optimizer, else the first label."""
    gate = task_cfg.get("gate") or {}
    if gate.get("optimizer"):
        return gate["optimizer"]
    labels = task_cfg.get("optimizers") or []
    if not labels:
        raise AggregateError("task has no `optimizers` list and no gate: no baseline label")
    return labels[0]


def _seed_of(dirname: str) -> int:
    return int(dirname.removeprefix("seed"))


def read_curve(run_dir: Path) -> dict[str, list]:
    """metrics.jsonl as columns: step, val_metric, train_loss, wall_time_s (missing values NaN)."""
    cols: dict[str, list] = {"step": [], "val_metric": [], "train_loss": [], "wall_time_s": []}
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return cols
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AggregateError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if "step" not in rec:
            continue
        cols["step"].append(int(rec["step"]))
        for key in ("val_metric", "train_loss", "wall_time_s"):
            cols[key].append(as_float(rec.get(key)))
    return cols


def _numeric_items(d: dict | None, prefix: str = "") -> dict[str, float]:
    """Scalar numbers of a dict (booleans excluded), one level of nesting flattened with '.'."""
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) or v is None:
            out[prefix + k] = as_float(v)
        elif isinstance(v, dict) and not prefix:
            out.update(_numeric_items(v, prefix=f"{k}."))
    return out


def collect_label(results: Path, task: str, label: str, seeds: Sequence[int], cfg: dict | None = None) -> dict[str, Any]:
    """Every finished seed of one label: metrics, analysis scalars, curves, divergences.

    With `cfg`, the runs of its current config (`runs/<task>/<label>/<spec>/seed*`, or a tree written
    before the spec level: `config.label_dir`); without, `runs/<task>/<label>/seed*`.
    """
    label_dir = label_dir_of(results, "runs", cfg, task, label)
    found = sorted((p for p in label_dir.glob("seed*") if (p / "metrics.json").exists()),
                   key=lambda p: _seed_of(p.name)) if label_dir.exists() else []
    runs = []
    for run_dir in found:
        # schema-checked, and its task/label/seed must be those of its path (runio.RECORD_SCHEMA)
        m = read_record(run_dir / "metrics.json", expect={"task": task, "label": label, "seed": _seed_of(run_dir.name)})
        seed = int(m["seed"])
        values = {k: as_float(m.get(k)) for k in RUN_METRICS}
        values.update({f"extra.{k}": v for k, v in _numeric_items(m.get("extra")).items()})
        analysis_file = results / "analysis" / task / label / f"seed{seed}.json"
        if analysis_file.exists():
            values.update(_numeric_items(read_json(analysis_file)))
        runs.append({
            "seed": seed, "dir": str(run_dir), "meta": m, "values": values,
            "diverged": bool(m.get("diverged")) or not math.isfinite(values["final_test"]),
            "curve": read_curve(run_dir),
        })
    done = {r["seed"] for r in runs}
    return {"runs": runs, "missing": [s for s in seeds if s not in done]}


def _finite(xs: Sequence[float]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def compare(method: Sequence[float], baseline: Sequence[float], higher_is_better: bool,
            method_seeds: Sequence[int] | None = None, baseline_seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Welch test, Hedges' g and paired seed wins of method minus baseline.

    NaN (diverged) values are left out of the test and counted in n_method_nan / n_baseline_nan;
    in the paired seed wins a diverged seed is a loss. `better` is True when the difference points
    the way the metric improves. Constant arms (e.g. optimizer-state bytes) follow `welch`'s limit:
    p = 0 and a zero-width interval for different constants.
    """
    a, b = [as_float(x) for x in method], [as_float(x) for x in baseline]
    fa, fb = _finite(a), _finite(b)
    w = welch(a, b)
    out: dict[str, Any] = {
        "n_method": len(fa), "n_baseline": len(fb),
        "n_method_nan": len(a) - len(fa), "n_baseline_nan": len(b) - len(fb),
        "mean_method": float(np.mean(fa)) if fa else math.nan,
        "mean_baseline": float(np.mean(fb)) if fb else math.nan,
        **{k: as_float(w[k]) for k in ("t", "df", "p", "diff", "ci_low", "ci_high")},
        "degenerate": w.get("degenerate"),
        "hedges_g": as_float(hedges_g(a, b)),
    }
    out["se"] = (math.sqrt(np.var(fa, ddof=1) / len(fa) + np.var(fb, ddof=1) / len(fb))
                 if len(fa) > 1 and len(fb) > 1 else math.nan)
    if method_seeds is not None and baseline_seeds is not None:
        out["paired_wins"] = paired_wins(dict(zip(method_seeds, a)), dict(zip(baseline_seeds, b)), higher_is_better)
    d = out["diff"]
    out["better"] = (d > 0) == higher_is_better if math.isfinite(d) and d != 0 else None
    return out


#: Classes per dataset, for the chance level of an accuracy metric (the failure rule).
N_CLASSES = {"digits8": 10, "digits32": 10, "mnist1d": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
             "cifar100": 100, "imdb": 2, "ag_news": 4}


def run_failures(agg: dict, label: str) -> list[str | None]:
    """Why each run of `label` failed (optirep.analysis.stats.failure_reason), None where it did not.

    Reads what every aggregate holds: the run's final quality metric (final_test), its final train loss and
    the first logged train loss of its curve; the chance level is 1 / classes of the dataset for accuracy.
    """
    info = agg["per_label"][label]
    n = len(info["seeds"])
    chance = 1.0 / N_CLASSES[agg.get("dataset")] if agg.get("metric") == "accuracy" and agg.get("dataset") in N_CLASSES else None
    quality = [as_float(x) for x in info["values"].get("final_test", [None] * n)]
    final = [as_float(x) for x in info["values"].get("final_train_loss", [None] * n)]
    curves = {c["seed"]: c for c in info.get("curves", [])}
    out = []
    for i, seed in enumerate(info["seeds"]):
        first = [as_float(x) for x in (curves.get(seed) or {}).get("train_loss", [])][:1]
        out.append(failure_reason(quality[i] if i < len(quality) else math.nan, first[0] if first else math.nan,
                                  final[i] if i < len(final) else math.nan, chance))
    return out


def add_holm(comparisons: list[dict], alpha: float = ALPHA) -> None:
    """Holm-adjust the p values of one family in place (NaN p values stay out of the family)."""
    idx = [i for i, c in enumerate(comparisons) if math.isfinite(as_float(c.get("p")))]
    adjusted = holm([comparisons[i]["p"] for i in idx]) if idx else []
    for c in comparisons:
        c["p_holm"], c["significant"], c["family_size"] = math.nan, False, len(idx)
    for i, p_adj in zip(idx, adjusted):
        comparisons[i]["p_holm"] = float(p_adj)
        comparisons[i]["significant"] = bool(p_adj < alpha)


def gate_check(task_cfg: dict, per_label: dict) -> dict[str, Any]:
    """The baseline sanity gate on the baseline's mean final_test; a diverged baseline run fails it."""
    gate = dict(task_cfg.get("gate") or {})
    if not gate:
        return {"passed": True, "reason": "no gate declared", "value": None}
    label = gate["optimizer"]
    info = per_label.get(label)
    if info is None or info["n_runs"] == 0:
        return {**gate, "passed": False, "value": None, "reason": f"no finished runs of baseline {label!r}"}
    vals = info["values"]["final_test"]
    value = float(np.mean(vals)) if vals else math.nan
    if info["n_diverged"]:
        return {**gate, "passed": False, "value": value,
                "reason": f"{info['n_diverged']}/{info['n_runs']} baseline runs diverged"}
    ok, why = True, []
    if "min" in gate and not value >= gate["min"]:
        ok = False
        why.append(f"mean final_test {value:.4g} < min {gate['min']}")
    if "max" in gate and not value <= gate["max"]:
        ok = False
        why.append(f"mean final_test {value:.4g} > max {gate['max']}")
    return {**gate, "passed": ok, "value": value, "reason": "; ".join(why) or "passed"}


def label_dir_of(results: Path, kind: str, cfg: dict | None, task: str, label: str) -> Path:
    return label_dir(results, kind, cfg, task, label) if cfg is not None else Path(results) / kind / task / label


def collect_tuning(results: Path, task: str, label: str, cfg: dict | None = None) -> dict[str, Any] | None:
    """The tuning record of one label, or None if it was not tuned.

    The tree read is `tune/<task>/<label>/<spec>` of the current config when `cfg` is given, else (or when
    that does not exist and the label's folder holds a tree written before the spec level existed)
    `tune/<task>/<label>` (`config.label_dir`).

    Current protocol (optirep.tuning): `trials` = every configuration (LR-sweep points `lr/k<k>` and random
    trials `random/trial<j>`) with its per-tuning-seed and mean validation metrics, lr, gain and effective lr;
    `sweep` = the bracketing record (interior or the bound that stopped it, intervals, budget); `selected` =
    selected.json without its trial list. Trees of the old protocol (`trial<k>/` single-seed runs) are read
    as before, with `selected.trial` set from its `trial_dir` so that readers need no second code path.
    """
    tdir = label_dir_of(Path(results), "tune", cfg, task, label)
    if not tdir.exists():
        return None
    selected = read_json(tdir / "selected.json") if (tdir / "selected.json").exists() else None
    if (tdir / "sweep.json").exists() or (tdir / "lr").is_dir():
        trials = []
        for f in sorted(tdir.glob("lr/k*/trial.json"), key=lambda p: int(p.parent.name[1:])) + \
                sorted(tdir.glob("random/trial*/trial.json"), key=lambda p: int(p.parent.name[5:])):
            t = read_json(f)
            trials.append({k: t.get(k) for k in ("trial", "stage", "hp", "lr", "gain", "effective_lr", "seeds",
                                                 "final_val", "best_val", "final_val_seeds", "best_val_seeds",
                                                 "diverged", "wall_time_s")})
        sweep = read_json(tdir / "sweep.json") if (tdir / "sweep.json").exists() else None
        if sweep is not None:
            sweep = {k: v for k, v in sweep.items() if k != "points"} | {"n_points": len(sweep["points"])}
        if selected is not None:
            selected = {k: v for k, v in selected.items() if k != "trials"}
        return {"protocol": "bracketed", "selected": selected, "sweep": sweep, "trials": trials}
    trials = []
    for tr in sorted(tdir.glob("trial*"), key=lambda p: int(p.name.removeprefix("trial") or 0)):
        if not (tr / "metrics.json").exists():
            continue
        m = read_record(tr / "metrics.json", expect={"task": task, "label": label}, schema=TRIAL_SCHEMA)
        hp = m.get("hp")
        if hp is None and (tr / "config.json").exists():
            hp = read_json(tr / "config.json").get("hp")
        trials.append({"trial": int(tr.name.removeprefix("trial")), "hp": hp or {},
                       "final_val": as_float(m.get("final_val")), "best_val": as_float(m.get("best_val")),
                       "diverged": bool(m.get("diverged")), "wall_time_s": as_float(m.get("wall_time_s"))})
    if selected is not None and "trial" not in selected and selected.get("trial_dir"):
        selected["trial"] = int(Path(selected["trial_dir"]).name.removeprefix("trial"))
    return {"protocol": "single-seed trials", "selected": selected, "trials": trials}


def tuning_budget(agg: dict) -> int:
    """Tuning runs per tuned optimizer of a task: the stated `tuning.budget`, or an old study's trial count."""
    t = agg.get("tuning") or {}
    return int(t["budget"]) if "budget" in t else int(t.get("trials", 0))


def tuning_view(tuning: dict | None) -> dict | None:
    """One shape for a label's tuning record, from this protocol's aggregates or older ones.

    Returns None for an untuned label, else {protocol, selected_trial, selected (dict), trials (list), sweep
    (dict or None), lr, effective_lr, gain, edge, bound_hit}: older aggregates have no sweep and no effective
    lr (NaN), and their `selected` carries `trial_dir` instead of `trial`. `edge` ("lower" | "upper" | None)
    says where the optimum sits when the search did not bracket it: the sweep's best point at an edge, or (old
    protocol) the selected lr at the smallest or largest lr sampled; `bound_hit` names what stopped it.
    """
    if not tuning:
        return None
    sel = dict(tuning.get("selected") or {})
    trial = sel.get("trial")
    if trial is None and sel.get("trial_dir"):
        trial = int(Path(sel["trial_dir"]).name.removeprefix("trial"))
    hp = sel.get("hp") or {}
    trials = list(tuning.get("trials") or [])
    lr = as_float(sel.get("lr", hp.get("lr")))
    sweep = tuning.get("sweep")
    if sweep:
        edge, bound = (None, None) if sweep.get("interior") else (sweep.get("edge"), sweep.get("bound_hit"))
    else:  # old protocol: the selected lr at the smallest or largest lr sampled
        lrs = [as_float((t.get("hp") or {}).get("lr")) for t in trials]
        lrs = [x for x in lrs if math.isfinite(x)]
        edge = None
        if lrs and math.isfinite(lr) and len(lrs) > 1:
            edge = "lower" if lr <= min(lrs) else "upper" if lr >= max(lrs) else None
        bound = "sampled range" if edge else None
    return {
        "protocol": tuning.get("protocol", "single-seed trials"), "selected_trial": trial, "selected": sel,
        "trials": trials, "sweep": sweep, "lr": lr, "effective_lr": as_float(sel.get("effective_lr")),
        "gain": as_float(sel.get("gain")), "edge": edge, "bound_hit": bound,
    }


def task_design(cfg: dict, task: str) -> dict[str, Any]:
    """What an aggregate records of the design it was made under: seeds, labels, budget, tuning
    (optirep.report.claims judges an aggregate only while these still match the experiment's YAML)."""
    tcfg = cfg["tasks"][task]
    return {"seeds": list(cfg.get("seeds") or []), "labels": list(tcfg.get("optimizers") or []),
            "budget": {k: tcfg.get(k) for k in ("steps", "epochs", "batch_size") if k in tcfg},
            "tuning": cfg.get("tuning")}


def aggregate_task(cfg: dict, results: str | Path, task: str) -> dict[str, Any]:
    """Everything the report needs about one task, as a JSON-ready dict."""
    results = Path(results)
    tasks = cfg.get("tasks") or {}
    if task not in tasks:
        raise AggregateError(f"task {task!r} not in experiment {cfg.get('name')!r} (tasks: {', '.join(sorted(tasks))})")
    tcfg = tasks[task]
    labels = list(tcfg.get("optimizers") or [])
    base = baseline_label(tcfg)
    if base not in labels:
        raise AggregateError(f"task {task!r}: baseline label {base!r} is not in its optimizers {labels}")
    metric = tcfg.get("metric", "accuracy")
    hib = HIGHER_IS_BETTER.get(metric, True)
    seeds = list(cfg.get("seeds") or [])

    per_label: dict[str, dict] = {}
    raw: dict[str, dict] = {}
    for label in labels:
        got = collect_label(results, task, label, seeds, cfg)
        raw[label] = got
        runs = got["runs"]
        keys = sorted({k for r in runs for k in r["values"]}, key=lambda k: (k not in RUN_METRICS, k))
        values = {k: [r["values"].get(k, math.nan) for r in runs] for k in keys}
        if metric == "perplexity" and "extra.train_ppl" not in values and "final_train_loss" in values:
            # The seed's V6-5 claim is a train perplexity; exp(mean train loss) is its closest proxy.
            values["train_ppl"] = [math.exp(x) if math.isfinite(x) and x < 700 else math.nan
                                   for x in values["final_train_loss"]]
        first = runs[0]["meta"] if runs else {}
        opt_cfg = (cfg.get("optimizers") or {}).get(label, {})
        per_label[label] = {
            "optimizer": first.get("optimizer", opt_cfg.get("name")),
            "hp": first.get("hp", opt_cfg.get("hp")),
            "seeds": [r["seed"] for r in runs],
            "n_runs": len(runs),
            "missing_seeds": got["missing"],
            "n_diverged": sum(r["diverged"] for r in runs),
            "diverged_seeds": [r["seed"] for r in runs if r["diverged"]],
            "values": values,
            "stats": {k: summarize(v) for k, v in values.items()},
            "curves": [{"seed": r["seed"], **r["curve"]} for r in runs],
            "tuning": collect_tuning(results, task, label, cfg),
            "versions": first.get("versions"), "git_sha": first.get("git_sha"), "device": first.get("device"),
            # each run's commit and code path (claims flag a comparison whose runs ran different code)
            "provenance": [{"seed": r["seed"], "git_sha": r["meta"].get("git_sha"),
                            "code_path": r["meta"].get("code_path")} for r in runs],
        }

    base_best = _finite(per_label[base]["values"].get("best_val", []))
    target = statistics.median(base_best) if base_best else math.nan
    for label in labels:
        rows = []
        for r in raw[label]["runs"]:
            c = r["curve"]
            if math.isfinite(target) and c["step"]:
                times = c["wall_time_s"] if all(math.isfinite(t) for t in c["wall_time_s"]) else None
                ttt = time_to_target(c["step"], c["val_metric"], target, higher_is_better=hib, times=times)
                step, sec = as_float(ttt.get("step")), as_float(ttt.get("seconds"))
            else:
                step = sec = math.nan
            rows.append({"seed": r["seed"], "step": step, "seconds": sec})
        reached = [row for row in rows if math.isfinite(row["step"])]
        # A miss counts as infinitely slow, so the median is finite only if most runs reached it.
        steps = sorted([row["step"] for row in rows], key=lambda s: s if math.isfinite(s) else math.inf)
        secs = sorted([row["seconds"] for row in rows], key=lambda s: s if math.isfinite(s) else math.inf)
        per_label[label]["time_to_target"] = {
            "per_seed": rows, "n_reached": len(reached), "n": len(rows),
            "median_step": _median_with_misses(steps), "median_seconds": _median_with_misses(secs),
        }

    comparisons = []
    for label in labels:
        if label == base:
            continue
        c = compare(per_label[label]["values"].get("final_test", []),
                    per_label[base]["values"].get("final_test", []), hib,
                    per_label[label]["seeds"], per_label[base]["seeds"])
        comparisons.append({"metric": "final_test", "method": label, "baseline": base, **c})
    add_holm(comparisons)

    gate = gate_check(tcfg, per_label)
    # Compute spent on the task: the final runs' and the tuning trials' wall times (finite ones).
    run_s = sum(t for info in per_label.values() for t in _finite(info["values"].get("wall_time_s", [])))
    trial_s = sum(t for info in per_label.values() for tr in ((info.get("tuning") or {}).get("trials") or [])
                  for t in _finite([tr.get("wall_time_s", math.nan)]))
    # Grad-CAM ROAD faithfulness per label (analysis/gradcam.py), when the task has one
    gradcam_file = Path(results) / "gradcam" / f"{task}.json"
    gradcam = read_json(gradcam_file) if gradcam_file.exists() else None
    return {
        "experiment": cfg.get("name"), "scale": cfg.get("scale"), "gpu_estimate": cfg.get("gpu_estimate"),
        "task": task, "dataset": tcfg.get("dataset"), "model": tcfg.get("model"),
        **task_design(cfg, task), "metric": metric, "higher_is_better": hib, "baseline": base, "alpha": ALPHA,
        "gate": gate, "gate_passed": bool(gate["passed"]),
        "target": {"value": target, "metric": "val_metric",
                   "rule": f"median best_val of baseline {base!r} over its {len(base_best)} finite seeds"},
        "per_label": per_label, "comparisons": comparisons, "gradcam": gradcam,
        "compute_s": {"runs": run_s, "trials": trial_s, "total": run_s + trial_s},
    }


def _median_with_misses(sorted_vals: list[float]) -> float:
    if not sorted_vals:
        return math.nan
    n = len(sorted_vals)
    mid = sorted_vals[(n - 1) // 2: n // 2 + 1]
    if not all(math.isfinite(v) for v in mid):
        return math.nan
    return float(np.mean(mid))


def read_aggregates(results_dir: str | Path) -> list[dict]:
    """Every results/<exp>/aggregate/<task>.json of one experiment, in task-name order."""
    adir = Path(results_dir) / "aggregate"
    if not adir.is_dir():
        raise AggregateError(f"{adir} does not exist: run `optirep aggregate` for {results_dir} first")
    return [read_json(p) for p in sorted(adir.glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    """`optirep aggregate`: write results/<exp>/aggregate/<task>.json."""
    ap = argparse.ArgumentParser(prog="optirep aggregate", description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", required=True, help="experiments/<name>.yaml")
    ap.add_argument("--results", required=True, help="results/<name>")
    ap.add_argument("--task", required=True)
    ap.add_argument("--out", help="default: <results>/aggregate/<task>.json")
    args = ap.parse_args(argv)
    try:
        cfg = load_experiment(args.experiment)
        agg = aggregate_task(cfg, args.results, args.task)
    except AggregateError as exc:
        print(f"optirep aggregate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.results) / "aggregate" / f"{args.task}.json")
    write_json(out, agg)
    g = agg["gate"]
    print(f"{out}: {len(agg['labels'])} labels, baseline {agg['baseline']}, "
          f"gate {'passed' if g['passed'] else 'FAILED'} ({g['reason']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
