"""A verdict for every seed claim, from the aggregates: replicated / not replicated / inconclusive / ...

    optirep claims --claims experiments/claims.yaml --results results --out results/claims.json

Verdict rules (alpha = 0.05). For a claim with a `test`, read
`results/<experiment>/aggregate/<task>.json`, take the per-seed values of `metric` for the `method`
and `baseline` labels, and let d = mean(method) - mean(baseline) over the finite runs.
The family for multiple testing is every measured claim on the same (experiment, task): Welch p values
are Holm-adjusted within it (p_holm), and the reported interval is the simultaneous Bonferroni
interval CI* = d +- t(1 - alpha/(2m), df) * se (m = family size), conservative with respect to
Holm. The margin delta is the smallest effect that counts: `test.margin` ({absolute: x} or
{relative: r} times |our baseline mean|), else half of the seed's relative effect
|method - baseline| / |baseline| / 2 times |our baseline mean| when the seed gives both numbers,
else 1% of |our baseline mean|.

* "not run": the claim has `not_run` (the reason is printed), or its aggregate / label / metric is
  absent from the results (the reason names what is missing).
* "baseline failed": the task's sanity gate (aggregate `gate_passed`) failed; nothing is compared.
* direction higher / lower (s = +1 / -1; the claimed sign of d):
  - "replicated": p_holm < alpha and s*d > 0, and no method run failed (NaN in the tested metric,
    which is what a diverged run writes for its quality metrics);
  - "not replicated": p_holm < alpha and s*d < 0 (significant in the opposite direction), or the
    upper end of s*CI* is below delta (an effect of the claimed size is excluded; this covers a
    CI tight around 0);
  - "inconclusive": anything else (including a would-be "replicated" with NaN method values, and
    fewer than 2 finite runs on a side). A significant effect smaller than delta still counts as
    "replicated" (the direction is what the seed claims; the sizes stand side by side).
* direction equal (parity): "replicated" when CI* lies inside [-delta, delta] and no method value
  is NaN; "not replicated" when p_holm < alpha and CI* lies wholly outside [-delta, delta];
  else "inconclusive".
* direction not_worse ("competitive"): oriented so that positive = better for the metric;
  "replicated" when the lower end of the oriented CI* is above -delta and no method value is NaN;
  "not replicated" when the upper end is below -delta; else "inconclusive".
* `derived_from` (a summary claim): "not replicated" if any part is, "replicated" if every part is,
  "not run" if no part was measured, else "inconclusive".
Diverged runs are never dropped silently: they are counted per side in every record.

Timing claims (`test.source: timing`, metric `step_s` or `opt_step_s`) are judged from the timing
stage's record `results/<experiment>/timing/<task>.json` (optirep timing: the labels interleaved one
training step at a time in one process, one commit), not from the training runs. With r the median of
the per-round paired ratio method/baseline and [lo, hi] its distribution-free 95% interval, and the
margin delta as a relative effect (as above, relative to 1): "replicated" when the interval lies on the
claimed side of 1 (lo > 1 for higher, hi < 1 for lower); "not replicated" when it lies wholly on the
other side, or when the claimed side stays within delta of 1 (hi - 1 < delta for higher); else
"inconclusive", and always "inconclusive" when the record has fewer repeats than it needs for a claim
(20). Timing records are not in the Welch/Holm families.

A claim may also carry `full_scale` (same shape as `test`, pointing at a GPU experiment such as
full_cifar10). It is judged by the same rules into `record["full_scale"]`, in its own families; while
its results are absent it is "not run" with the experiment's `gpu_estimate`. The headline verdict
stays the one of `test` (or `not_run`), so the scale label of every verdict is explicit.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from scipy import stats as sps

from optirep.analysis.stats import holm
from optirep.report._io import as_float, read_json, write_json
from optirep.report.aggregate import compare

ALPHA = 0.05
VERDICTS = ("replicated", "not replicated", "inconclusive", "baseline failed", "not run")
DEFAULT_RELATIVE_MARGIN = 0.01

_SEED_VALUE = {
    "type": "object", "additionalProperties": False, "required": ["text"],
    "properties": {"baseline": {"type": "number"}, "method": {"type": "number"},
                   "unit": {"type": "string"}, "text": {"type": "string", "minLength": 1}},
}
_MARGIN = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "properties": {"absolute": {"type": "number", "minimum": 0}, "relative": {"type": "number", "minimum": 0}},
}
_TEST = {
    "type": "object", "additionalProperties": False,
    "required": ["experiment", "task", "method", "baseline", "metric"],
    "properties": {
        "experiment": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "method": {"type": "string", "minLength": 1}, "baseline": {"type": "string", "minLength": 1},
        "metric": {"type": "string", "minLength": 1}, "margin": _MARGIN, "proxy": {"type": "string"},
        "baseline_task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "source": {"enum": ["aggregate", "timing"], "default": "aggregate"},
    },
}
#: metrics of a timing record (results/<experiment>/timing/<task>.json) a `source: timing` test may name
TIMING_METRICS = {"step_s": "ratio_step", "opt_step_s": "ratio_opt_step"}
CLAIMS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "optirep claims",
    "type": "object", "additionalProperties": False, "required": ["version", "claims"],
    "properties": {
        "version": {"const": 1},
        "claims": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "optimizer", "statement", "seed_value", "metric", "direction", "setup", "source"],
            "oneOf": [{"required": ["test"]}, {"required": ["not_run"]}, {"required": ["derived_from"]}],
            "properties": {
                "id": {"type": "string", "pattern": "^(V6|GRN|PW|NP)-[0-9]+$"},
                "optimizer": {"type": "string", "minLength": 1},
                "statement": {"type": "string", "minLength": 1},
                "seed_value": _SEED_VALUE,
                "metric": {"type": "string", "minLength": 1},
                "direction": {"enum": ["higher", "lower", "equal", "not_worse"]},
                "setup": {"type": "string", "minLength": 1},
                "source": {"type": "string", "pattern": r"^\S.* : \S+|^arXiv:"},
                "test": _TEST,
                "full_scale": _TEST,
                "not_run": {"type": "string", "minLength": 1},
                "derived_from": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "gpu_estimate": {"type": "string"},
            },
        }},
    },
}


class ClaimsError(ValueError):
    """claims.yaml is invalid; the message names the claim id / key and the allowed values."""


def validate_claims(doc: Any, source: str = "claims.yaml") -> dict:
    """Check `doc` against CLAIMS_SCHEMA plus cross-references; raise ClaimsError listing every problem."""
    validator = jsonschema.Draft202012Validator(CLAIMS_SCHEMA)
    problems = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in e.absolute_path) or "<top level>"
        if len(e.absolute_path) >= 2 and e.absolute_path[0] == "claims" and isinstance(doc, dict):
            try:
                where = f"claim {doc['claims'][e.absolute_path[1]].get('id', '?')} ({where})"
            except (IndexError, KeyError, TypeError, AttributeError):
                pass
        msg = e.message
        if e.validator == "oneOf" and "required" in str(e.validator_value):
            msg = "needs exactly one of `test`, `not_run`, `derived_from`"
        elif e.validator == "enum":
            msg += f" (allowed values: {', '.join(map(str, e.validator_value))})"
        elif e.validator == "additionalProperties":
            msg += f" (allowed keys: {', '.join(sorted(e.schema.get('properties', {})))})"
        problems.append(f"  {where}: {msg}")
    if not problems:
        ids = [c["id"] for c in doc["claims"]]
        for cid, k in Counter(ids).items():
            if k > 1:
                problems.append(f"  claim {cid}: id used {k} times")
        for c in doc["claims"]:
            for block in ("test", "full_scale"):
                t = c.get(block) or {}
                if t.get("source") == "timing" and t["metric"] not in TIMING_METRICS:
                    problems.append(f"  claim {c['id']}: {block}.metric {t['metric']!r} with source timing "
                                    f"(allowed values: {', '.join(TIMING_METRICS)})")
            for ref in c.get("derived_from", []):
                if ref not in ids:
                    problems.append(f"  claim {c['id']}: derived_from names unknown claim {ref!r}")
                elif ref == c["id"]:
                    problems.append(f"  claim {c['id']}: derived_from names itself")
    if problems:
        raise ClaimsError(f"{source}: invalid claims file:\n" + "\n".join(problems))
    return doc


def load_claims(path: str | Path) -> dict:
    """Read and validate experiments/claims.yaml."""
    path = Path(path)
    if not path.exists():
        raise ClaimsError(f"claims file {path} does not exist")
    return validate_claims(yaml.safe_load(path.read_text()), str(path))


def margin_for(claim: dict, baseline_mean: float) -> tuple[float, str]:
    """The smallest effect that counts, in our metric's units, and how it was set."""
    spec = claim["test"].get("margin")
    scale = abs(baseline_mean) if math.isfinite(baseline_mean) else math.nan
    if spec and "absolute" in spec:
        return float(spec["absolute"]), "test.margin.absolute"
    if spec and "relative" in spec:
        return float(spec["relative"]) * scale, f"{spec['relative']:g} x |baseline mean|"
    sv = claim.get("seed_value", {})
    if isinstance(sv.get("baseline"), (int, float)) and isinstance(sv.get("method"), (int, float)) and sv["baseline"]:
        rel = abs(sv["method"] - sv["baseline"]) / abs(sv["baseline"]) / 2
        return rel * scale, f"half the seed's relative effect ({rel:.3g}) x |baseline mean|"
    return DEFAULT_RELATIVE_MARGIN * scale, f"default {DEFAULT_RELATIVE_MARGIN:g} x |baseline mean|"


def simultaneous_ci(diff: float, se: float, df: float, family_size: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Bonferroni interval at level 1 - alpha/m around diff (exact when se == 0)."""
    if not (math.isfinite(diff) and math.isfinite(se)):
        return math.nan, math.nan
    if se == 0:
        return diff, diff
    q = sps.t.ppf(1 - alpha / (2 * max(family_size, 1)), df)
    return diff - q * se, diff + q * se


def decide(direction: str, diff: float, ci: tuple[float, float], p_holm: float, margin: float,
           n_method_diverged: int, higher_is_better: bool, alpha: float = ALPHA) -> tuple[str, str]:
    """The verdict for one measured claim and a one-line reason (rules in the module docstring).

    `n_method_diverged` counts the method's runs whose tested metric is NaN (a diverged run's
    quality metrics are NaN; its step time or state bytes may still be real numbers).
    """
    lo, hi = ci
    if not (math.isfinite(diff) and math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive", "too few finite runs for a test"
    sig = math.isfinite(p_holm) and p_holm < alpha
    div_note = f"; {n_method_diverged} method run(s) diverged" if n_method_diverged else ""
    if direction in ("higher", "lower"):
        s = 1.0 if direction == "higher" else -1.0
        olo, ohi = sorted((s * lo, s * hi))
        if sig and s * diff > 0:
            if n_method_diverged:
                return "inconclusive", f"significant in the claimed direction but {n_method_diverged} method run(s) diverged"
            return "replicated", f"significant in the claimed direction (Holm p={p_holm:.3g})"
        if sig and s * diff < 0:
            return "not replicated", f"significant in the opposite direction (Holm p={p_holm:.3g}){div_note}"
        if ohi < margin:
            return "not replicated", f"interval excludes an effect of the claimed size (upper {ohi:.3g} < margin {margin:.3g}){div_note}"
        return "inconclusive", f"not significant (Holm p={p_holm:.3g}) and an effect of {margin:.3g} is not excluded{div_note}"
    if direction == "equal":
        if -margin <= lo and hi <= margin:
            if n_method_diverged:
                return "inconclusive", f"equivalent within {margin:.3g} but {n_method_diverged} method run(s) diverged"
            return "replicated", f"interval inside +-{margin:.3g}"
        if sig and (lo > margin or hi < -margin):
            return "not replicated", f"significant difference beyond +-{margin:.3g} (Holm p={p_holm:.3g})"
        return "inconclusive", f"interval [{lo:.3g}, {hi:.3g}] neither inside nor outside +-{margin:.3g}{div_note}"
    if direction == "not_worse":
        s = 1.0 if higher_is_better else -1.0
        olo, ohi = sorted((s * lo, s * hi))
        if olo > -margin:
            if n_method_diverged:
                return "inconclusive", f"not worse than -{margin:.3g} but {n_method_diverged} method run(s) diverged"
            return "replicated", f"worse by less than {margin:.3g} (oriented lower end {olo:.3g})"
        if ohi < -margin:
            return "not replicated", f"worse by more than {margin:.3g} (oriented upper end {ohi:.3g})"
        return "inconclusive", f"oriented interval [{olo:.3g}, {ohi:.3g}] straddles -{margin:.3g}{div_note}"
    raise ClaimsError(f"direction {direction!r}: allowed values higher, lower, equal, not_worse")


def _base_record(claim: dict) -> dict[str, Any]:
    keys = ("id", "optimizer", "statement", "seed_value", "metric", "direction", "setup", "source", "gpu_estimate")
    return {k: claim.get(k) for k in keys}


_ONLY = "__only_experiments__"  # cache key: the experiments of this study (None: all)


def _load_agg(results_root: Path, experiment: str, task: str, cache: dict) -> tuple[Path, dict | None]:
    path = results_root / experiment / "aggregate" / f"{task}.json"
    only = cache.get(_ONLY)
    if only is not None and experiment not in only:
        return path, None  # another study's results never leak into this one's verdicts
    if path not in cache:
        cache[path] = read_json(path) if path.exists() else None
    return path, cache[path]


def _yaml(experiments_dir: Path | None, name: str) -> dict | None:
    """experiments/<name>.yaml as a dict, or None if there is no such file."""
    f = Path(experiments_dir) / f"{name}.yaml" if experiments_dir else None
    return (yaml.safe_load(f.read_text()) or {}) if f is not None and f.exists() else None


def _gpu_estimate(experiments_dir: Path | None, experiment: str) -> str | None:
    """`gpu_estimate` of experiments/<experiment>.yaml, if that file exists and sets it."""
    est = (_yaml(experiments_dir, experiment) or {}).get("gpu_estimate")
    return " ".join(str(est).split()) if est else None


def measure_timing(claim: dict, t: dict, results_root: Path, cache: dict,
                   experiments_dir: Path | None = None) -> dict[str, Any]:
    """The verdict of a `source: timing` test block from the timing stage's record (rules in the module docstring)."""
    rec = _base_record(claim)
    rec.update(experiment=t["experiment"], task=t["task"], baseline_task=t["task"], method=t["method"],
               baseline=t["baseline"], test_metric=t["metric"], proxy=t.get("proxy"), source="timing",
               gpu_estimate=claim.get("gpu_estimate") or _gpu_estimate(experiments_dir, t["experiment"]))
    path = results_root / t["experiment"] / "timing" / f"{t['task']}.json"
    only = cache.get(_ONLY)
    if (only is not None and t["experiment"] not in only) or not path.exists():
        return {**rec, "verdict": "not run",
                "why": f"no timing record yet for {t['experiment']}/{t['task']} (timing/{path.name} absent)"}
    tr = read_json(path)
    per = tr.get("per_label", {})
    for role in ("method", "baseline"):
        if t[role] not in per:
            return {**rec, "verdict": "not run",
                    "why": f"{role} label {t[role]!r} not in {path} (labels: {', '.join(per)})"}
    m, b = per[t["method"]], per[t["baseline"]]
    if tr.get("baseline") != t["baseline"]:  # ratios in the record are against its own baseline
        return {**rec, "verdict": "not run", "why": f"{path} measures against {tr.get('baseline')!r}, "
                                                   f"the claim against {t['baseline']!r}"}
    r = m[TIMING_METRICS[t["metric"]]]
    ratio, lo, hi = (as_float(r[k]) for k in ("median", "lo", "hi"))
    mb = as_float(b[t["metric"]]["median"])
    rel_margin, rule = margin_for({**claim, "test": t}, 1.0)
    rec.update(scale=tr.get("scale"), n_method=tr.get("repeats"), n_baseline=tr.get("repeats"),
               n_method_diverged=0, n_baseline_diverged=0, n_method_nan=0, n_baseline_nan=0,
               mean_method=as_float(m[t["metric"]]["median"]), mean_baseline=mb,
               ratio=ratio, ratio_ci=[lo, hi], ratio_ci_level=r.get("level"),
               diff=(ratio - 1) * mb, ci_low=(lo - 1) * mb, ci_high=(hi - 1) * mb, p=math.nan, p_holm=math.nan,
               margin=rel_margin * mb, margin_rule=rule.replace("|baseline mean|", "the baseline's median"),
               higher_is_better=False, timing_record=str(path), code_paths={k: v["code_path"] for k, v in per.items()},
               hardware=tr.get("hardware"), git_sha=tr.get("git_sha"))
    s = 1.0 if claim["direction"] == "higher" else -1.0
    if claim["direction"] not in ("higher", "lower"):
        verdict, why = "inconclusive", f"direction {claim['direction']!r} is not judged from a timing record"
    elif not tr.get("enough_for_claim", False):
        verdict, why = "inconclusive", (f"{tr.get('repeats')} timed repeats, fewer than the "
                                        f"{tr.get('min_repeats_for_claim')} a timing claim needs")
    else:
        span = f"ratio {ratio:.3f} [{lo:.3f}, {hi:.3f}] over {tr['repeats']} interleaved repeats"
        near, far = (lo, hi) if s > 0 else (hi, lo)
        if s * (near - 1) > 0:
            verdict, why = "replicated", f"{span}: on the claimed side of 1"
        elif s * (far - 1) < 0:
            verdict, why = "not replicated", f"{span}: on the opposite side of 1"
        elif s * (far - 1) < rel_margin:
            verdict, why = "not replicated", f"{span}: an effect of {rel_margin:.3g} (the margin) is excluded"
        else:
            verdict, why = "inconclusive", f"{span}: includes 1"
    return {**rec, "verdict": verdict, "why": why}


def measure(claim: dict, t: dict, results_root: Path, cache: dict, experiments_dir: Path | None = None) -> dict[str, Any]:
    """The comparison behind one test block `t` (no verdict yet), or a "not run" record.

    `t.baseline_task` reads the baseline label from another task of the same experiment (e.g.
    Planeswalker's multiplexed vs summed losses are two tasks); both tasks' gates must pass.
    A `source: timing` block is judged by `measure_timing` (verdict included).
    """
    if t.get("source") == "timing":
        return measure_timing(claim, t, results_root, cache, experiments_dir)
    rec = _base_record(claim)
    btask = t.get("baseline_task", t["task"])
    rec.update(experiment=t["experiment"], task=t["task"], baseline_task=btask, method=t["method"],
               baseline=t["baseline"], test_metric=t["metric"], proxy=t.get("proxy"),
               gpu_estimate=claim.get("gpu_estimate") or _gpu_estimate(experiments_dir, t["experiment"]))
    path, agg = _load_agg(results_root, t["experiment"], t["task"], cache)
    bpath, bagg = _load_agg(results_root, t["experiment"], btask, cache)
    for p_, a_ in ((path, agg), (bpath, bagg)):
        if a_ is None:
            return {**rec, "verdict": "not run",
                    "why": f"no results yet for {t['experiment']}/{p_.stem} (aggregate/{p_.name} absent)"}
    rec.update(scale=agg.get("scale"), gpu_estimate=rec["gpu_estimate"] or agg.get("gpu_estimate"), gate=agg.get("gate"),
               task_metric=agg.get("metric"))
    for role, a_, p_ in (("method", agg, path), ("baseline", bagg, bpath)):
        if t[role] not in a_["per_label"]:
            return {**rec, "verdict": "not run",
                    "why": f"{role} label {t[role]!r} not in {p_} (labels: {', '.join(a_['per_label'])})"}
        if t["metric"] not in a_["per_label"][t[role]]["values"]:
            have = ", ".join(a_["per_label"][t[role]]["values"])
            return {**rec, "verdict": "not run", "why": f"metric {t['metric']!r} not measured for {t[role]!r} in {p_} (have: {have})"}
    m_info, b_info = agg["per_label"][t["method"]], bagg["per_label"][t["baseline"]]
    a = [as_float(x) for x in m_info["values"][t["metric"]]]
    b = [as_float(x) for x in b_info["values"][t["metric"]]]
    hib = bool(agg.get("higher_is_better", True)) if t["metric"] in ("final_test", "final_val", "best_val") else True
    c = compare(a, b, hib, m_info["seeds"], b_info["seeds"])
    rec.update(
        n_method=c["n_method"], n_baseline=c["n_baseline"],
        n_method_diverged=m_info["n_diverged"], n_baseline_diverged=b_info["n_diverged"],
        n_method_nan=c["n_method_nan"], n_baseline_nan=c["n_baseline_nan"],
        mean_method=c["mean_method"], mean_baseline=c["mean_baseline"],
        std_method=as_float(m_info["stats"].get(t["metric"], {}).get("std")),
        std_baseline=as_float(b_info["stats"].get(t["metric"], {}).get("std")),
        diff=c["diff"], p=c["p"], df=c["df"], se=c["se"], hedges_g=c["hedges_g"], paired_wins=c.get("paired_wins"),
        ratio=c["mean_method"] / c["mean_baseline"] if c["mean_baseline"] else math.nan,
        higher_is_better=hib,
    )
    rec["margin"], rec["margin_rule"] = margin_for({**claim, "test": t}, c["mean_baseline"])
    failed = [a_["gate"].get("reason") for a_ in {id(agg): agg, id(bagg): bagg}.values() if not a_.get("gate_passed", False)]
    if failed:
        rec.update(verdict="baseline failed", why="baseline gate failed: " + "; ".join(map(str, failed)))
    return rec


#: Official training-set sizes (before this project's validation split), for the steps per epoch of a
#: full-scale task that is given in epochs.
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "mnist": 60000, "fashion_mnist": 60000,
               "imdb": 25000, "ag_news": 120000, "voc2012": 1464}


def full_scale_cost(experiments_dir: Path | None, full: dict, reduced: dict, results_root: Path,
                    cache: dict) -> dict[str, Any] | None:
    """Runs, steps and CPU time of a claim's full-scale task, extrapolated from step times measured here.

    steps per run = `steps`, or `epochs` x ceil(n_train / batch) with n_train the official training set
    minus the task's validation split (times `train_fraction`); runs = every label's seeds plus the
    tuning trials of tuned labels. The rate is the mean measured seconds per training example over the
    labels of the reduced test's task (its `time_per_step_s` / its batch size): the cost of the same
    model family per example on this machine, which assumes cost proportional to examples. None where a
    piece is missing (no full-scale file, no measured reduced run, a dataset size not known).
    """
    fcfg = _yaml(experiments_dir, full["experiment"])
    rcfg = _yaml(experiments_dir, reduced.get("experiment", ""))
    if not fcfg or not rcfg or full["task"] not in fcfg.get("tasks", {}):
        return None
    task = fcfg["tasks"][full["task"]]
    steps = task.get("steps")
    if steps is None:
        n = TRAIN_SIZES.get(task["dataset"])
        if n is None or "epochs" not in task:
            return None
        da = task.get("data_args") or {}
        vs = da.get("val_size") or 0
        n = n - int(vs) if isinstance(vs, int) else int(n * (1 - vs))
        n = int(n * da.get("train_fraction", 1.0))
        steps = task["epochs"] * math.ceil(n / task["batch_size"])
    seeds = len(fcfg.get("seeds", []))
    trials = (fcfg.get("tuning") or {}).get("trials", 0)
    runs = sum(seeds + (trials if (fcfg["optimizers"].get(lab) or {}).get("tune") else 0)
               for lab in task["optimizers"])
    _, agg = _load_agg(results_root, reduced["experiment"], reduced["task"], cache)
    rtask = rcfg.get("tasks", {}).get(reduced["task"])
    if agg is None or rtask is None:
        return None
    per_step = [as_float(x) for info in agg["per_label"].values() for x in info["values"].get("time_per_step_s", [])]
    per_step = [x for x in per_step if math.isfinite(x)]
    if not per_step:
        return None
    s_per_example = statistics.fmean(per_step) / rtask["batch_size"]
    examples = runs * steps * task["batch_size"]
    return {"runs": runs, "steps_per_run": steps, "batch_size": task["batch_size"], "examples": examples,
            "measured_on": f"{reduced['experiment']}/{reduced['task']}", "s_per_example": s_per_example,
            "cpu_hours": examples * s_per_example / 3600.0}


def _judge_families(records: list[dict], alpha: float) -> None:
    """Holm within each (experiment, task) family of measured records, then the verdict of each."""
    families: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        if "verdict" not in rec:
            families[(rec["experiment"], rec["task"])].append(rec)
    for fam in families.values():
        idx = [i for i, r in enumerate(fam) if math.isfinite(as_float(r["p"]))]
        adj = holm([fam[i]["p"] for i in idx]) if idx else []
        for r in fam:
            r["p_holm"], r["family_size"] = math.nan, len(idx)
        for i, p in zip(idx, adj):
            fam[i]["p_holm"] = float(p)
        for r in fam:
            r["ci_low"], r["ci_high"] = simultaneous_ci(r["diff"], r["se"], r["df"], r["family_size"], alpha)
            r["verdict"], r["why"] = decide(r["direction"], r["diff"], (r["ci_low"], r["ci_high"]),
                                            r["p_holm"], r["margin"], r["n_method_nan"],
                                            r["higher_is_better"], alpha)


def evaluate(doc: dict, results_root: str | Path, alpha: float = ALPHA,
             experiments_dir: str | Path | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Verdicts for every claim of a validated claims document.

    A claim's `full_scale` block is judged the same way into `record["full_scale"]` (its own
    families); when its results are absent it says so, with the experiment's `gpu_estimate`.
    """
    results_root = Path(results_root)
    experiments_dir = Path(experiments_dir) if experiments_dir else None
    cache: dict = {_ONLY: set(only) if only is not None else None}
    records: dict[str, dict] = {}
    full: dict[str, dict] = {}
    for claim in doc["claims"]:
        if "not_run" in claim:
            records[claim["id"]] = {**_base_record(claim), "verdict": "not run", "why": claim["not_run"],
                                    "scale": None}
        elif "test" in claim:
            records[claim["id"]] = measure(claim, claim["test"], results_root, cache, experiments_dir)
        if "full_scale" in claim:
            full[claim["id"]] = measure(claim, claim["full_scale"], results_root, cache, experiments_dir)
            if "test" in claim:
                cost = full_scale_cost(experiments_dir, claim["full_scale"], claim["test"], results_root, cache)
                if cost is not None:
                    full[claim["id"]]["cost"] = cost
    _judge_families(list(records.values()), alpha)
    _judge_families(list(full.values()), alpha)
    for cid, rec in full.items():
        records[cid]["full_scale"] = rec
        if records[cid]["verdict"] == "not run" and rec["verdict"] == "not run":
            records[cid]["gpu_estimate"] = records[cid].get("gpu_estimate") or rec.get("gpu_estimate")

    for claim in doc["claims"]:
        if "derived_from" in claim:
            parts = {ref: records[ref]["verdict"] for ref in claim["derived_from"] if ref in records}
            vs = set(parts.values())
            if "not replicated" in vs:
                v = "not replicated"
            elif vs == {"replicated"}:
                v = "replicated"
            elif vs <= {"not run"}:
                v = "not run"
            else:
                v = "inconclusive"
            records[claim["id"]] = {**_base_record(claim), "verdict": v, "parts": parts, "scale": None,
                                    "why": "summary of " + ", ".join(f"{k}: {x}" for k, x in parts.items())}

    ordered = [records[c["id"]] for c in doc["claims"]]
    counts = Counter(r["verdict"] for r in ordered)
    return {"alpha": alpha, "rules": __doc__.split("Verdict rules", 1)[1].strip(),
            "counts": {v: counts.get(v, 0) for v in VERDICTS}, "n_claims": len(ordered), "claims": ordered}


def main(argv: list[str] | None = None) -> int:
    """`optirep claims`: write results/claims.json."""
    ap = argparse.ArgumentParser(prog="optirep claims", description=__doc__.splitlines()[0])
    ap.add_argument("--claims", default="experiments/claims.yaml")
    ap.add_argument("--results", default="results", help="the results root holding <experiment>/aggregate/")
    ap.add_argument("--out", default="results/claims.json")
    ap.add_argument("--experiments", default="experiments",
                    help="folder of the experiment YAMLs (for the gpu_estimate of full-scale tests not run)")
    ap.add_argument("--only", nargs="+", default=None, metavar="EXPERIMENT",
                    help="judge only from these experiments' results (the study's); others read 'not run'")
    ap.add_argument("--check", action="store_true", help="only validate the claims file")
    args = ap.parse_args(argv)
    try:
        doc = load_claims(args.claims)
    except ClaimsError as exc:
        print(f"optirep claims: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.claims}: {len(doc['claims'])} claims, valid")
        return 0
    out = evaluate(doc, args.results, experiments_dir=args.experiments, only=args.only)
    if args.only is not None:
        out["experiments"] = list(args.only)
    write_json(args.out, out)
    print(f"{args.out}: " + ", ".join(f"{v} {n}" for v, n in out["counts"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
