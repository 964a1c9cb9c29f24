"""A verdict for every seed claim, from the aggregates: two questions per claim, pre-registered rules.

    optirep claims --claims experiments/claims.yaml --results results --out results/claims.json

Verdict rules (issue #10; alpha = 0.05, one-sided, every quantity in the record).

1. Pre-registration (experiments/claims.yaml). Each measured claim names its comparison (`test`:
   experiment, task, method label, baseline label, metric; `source` says which record source holds the
   per-seed values, "aggregate" = results/<experiment>/aggregate/<task>.json), its claimed effect carried
   over into our units (`claimed.carry`: `error_reduction` = the seed's relative error reduction times our
   baseline error; `relative` = the seed's relative change times our baseline mean; `ratio` = the seed's
   ratio, tested on the log scale; `absolute` = the seed's difference in our units) and its smallest effect
   of interest (SESOI): `sesoi` ({fraction: f} of the claimed effect, {relative: r} x |baseline mean|,
   {absolute: x}, or the legacy `test.margin`), by default half the claimed effect; a claim without a
   number gets 1% of |baseline mean| (log 1.01 for a ratio) and can at most be "replicated (direction only)".
2. Two questions, each with its own verdict. (a) *Direct replication*: the seed's own settings against the
   seed's own baseline (`replication`: labels, inheriting experiment/task/metric from `test`). (b)
   *Attribution*: does the effect survive equal tuning (`test`, or `attribution` overriding its labels) and
   the learning-rate-matched control (`lr_control`, where the study has one)? The headline verdict is (b).
   The control enters as an intersection-union test: (b) is "replicated" only when both the tuned
   comparison and the control are, "not replicated" when either is; this needs no further correction.
3. Decision, one-sided in the claimed direction, on the effect e oriented so that the claim says e > 0,
   with the one-sided (1 - alpha) bounds [lo, hi] (the two-sided 90% interval):
   * "replicated": the primary test is significant (Holm-adjusted p < alpha, i.e. lo > 0) and e >= SESOI,
     or the interval contains the claimed effect;
   * "not replicated": hi < SESOI (an effect of interest is excluded; this includes a significant effect
     in the opposite direction and a significant effect far smaller than claimed);
   * "inconclusive": anything else.
   Parity claims (direction `equal`) use TOST with bounds +-SESOI: "replicated" when both one-sided tests
   reject (p_TOST = max of the two, Holm-adjusted), "not replicated" when the interval lies wholly outside
   [-SESOI, SESOI]. "Competitive" claims (`not_worse`): "replicated" when H0: e <= -SESOI is rejected,
   "not replicated" when hi < -SESOI.
4. Tests that fit the data (optirep.analysis.stats.effect_test): seeds pair up across arms (same subset and
   initialisation), so paired t on the per-seed differences; an exact rank test (Wilcoxon signed-rank
   paired, Mann-Whitney U unpaired, failed runs at the worst rank) with a percentile-bootstrap interval
   when an arm has a failed run or the arms' SD ratio exceeds 4.
5. Failures are results: a run fails when its loss or quality metric is non-finite, its final train loss is
   above its first logged one, or its accuracy ends within 2 pp of chance. They are counted per arm in every
   record and table and enter the tests at the worst rank (cost metrics, e.g. step time or state bytes,
   of a failed run are still real measurements and are used as measured).
6. One correction across the study: one primary test per claim (question b's tuned comparison, or the
   interaction), Holm across every primary test of the study (the full-scale tests form their own family).
   Question (a), the LR-matched control and everything else are judged at the per-claim alpha and are
   descriptive.
7. Interaction claims (`interaction: {task: T}`): the effect is the difference of differences
   (method - baseline on `test.task`) - (method - baseline on T), Welch (or Mann-Whitney) across the two
   sets of per-seed differences, with its interval.
8. Power (stats.power_analysis): from the per-seed SD of the primary comparison, the minimum detectable
   effect at the planned n (the experiment's seeds) and the n needed for the SESOI (one-sided alpha, power
   0.8). A would-be "inconclusive" whose SESOI needs more seeds than `design.seed_budget` (or whose rank
   test cannot reach alpha at this n) is "untestable at this scale", with the numbers.
9. Proxy validity (`gates`, plus the automatic resolution gate: one test example of an accuracy metric
   must be finer than the SESOI): a failed gate gives "not tested (proxy invalid)" with the reason.
10. Deterministic quantities (`deterministic: true`, e.g. state bytes) are exact ratios, not tested:
    "replicated" when the oriented log ratio reaches the SESOI, else "not replicated".
11. Provenance: each arm's commit (and code path, where the runs record one) is compared; a comparison
    whose runs come from different commits or uncommitted code, one of whose arms mixes code paths, or
    whose two arms run one optimizer on different paths, is flagged in the record.
Other verdicts: "not run" (`not_run`, or its results are absent, or its aggregate was made under an earlier
design than experiments/<exp>.yaml now states (seeds, labels, budget or tuning): the reason names which),
"baseline failed" (the task's sanity gate failed; nothing is compared). `derived_from` (a summary claim):
"not replicated" if any part is, "replicated" if every part is, "not run" if no part was measured, else
"inconclusive". Paired seed wins are oriented by the metric's better direction (by the claimed direction
for metrics without one, e.g. spectral ones).

A claim may also carry `full_scale` (same shape as `test`, pointing at a GPU experiment such as
full_cifar10). It is judged by the same rules into `record["full_scale"]`, in its own family; while its
results are absent it is "not run" with the experiment's `gpu_estimate`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import jsonschema
import numpy as np
import yaml

from optirep.analysis import stats as S
from optirep.config import ConfigError, parse_variant
from optirep.report._io import as_float, read_json, write_json
from optirep.report.aggregate import run_failures

ALPHA = 0.05
POWER = 0.8
SEED_BUDGET = 20
VERDICTS = ("replicated", "replicated (direction only)", "not replicated", "inconclusive",
            "untestable at this scale", "not tested (proxy invalid)", "baseline failed", "not run")
DEFAULT_RELATIVE_SESOI = 0.01
DEFAULT_FRACTION = 0.5
#: Metrics measuring cost, not quality: a failed run's value is still a real measurement.
COST_PREFIXES = ("time_", "wall_time", "peak_memory", "optimizer_state_bytes", "param_bytes")
QUALITY_KEYS = ("final_test", "final_val", "best_val")

_SEED_VALUE = {
    "type": "object", "additionalProperties": False, "required": ["text"],
    "properties": {"baseline": {"type": "number"}, "method": {"type": "number"},
                   "unit": {"type": "string"}, "text": {"type": "string", "minLength": 1}},
}
_MARGIN = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "properties": {"absolute": {"type": "number", "minimum": 0}, "relative": {"type": "number", "minimum": 0}},
}
_SOURCES = ["aggregate", "timing"]
_PARTIAL = {  # a comparison that inherits what it omits from `test`
    "type": "object", "additionalProperties": False, "required": ["method", "baseline"],
    "properties": {
        "experiment": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "baseline_task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "method": {"type": "string", "minLength": 1}, "baseline": {"type": "string", "minLength": 1},
        "metric": {"type": "string", "minLength": 1}, "source": {"enum": _SOURCES},
        "note": {"type": "string"},
    },
}
_TEST = {
    "type": "object", "additionalProperties": False,
    "required": ["experiment", "task", "method", "baseline", "metric"],
    "properties": {
        "experiment": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "method": {"type": "string", "minLength": 1}, "baseline": {"type": "string", "minLength": 1},
        "metric": {"type": "string", "minLength": 1}, "margin": _MARGIN, "proxy": {"type": "string"},
        "baseline_task": {"type": "string", "pattern": "^[a-z0-9_]+$"}, "source": {"enum": _SOURCES},
    },
}
_CLAIMED = {
    "type": "object", "additionalProperties": False, "required": ["carry"],
    "properties": {
        "carry": {"enum": ["error_reduction", "relative", "ratio", "absolute"]},
        "seed_baseline": {"type": "number"}, "seed_method": {"type": "number"},
        "effect": {"type": "number"}, "note": {"type": "string"},
    },
}
_SESOI = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 2,
    "properties": {"fraction": {"type": "number", "exclusiveMinimum": 0}, "relative": {"type": "number", "exclusiveMinimum": 0},
                   "absolute": {"type": "number", "exclusiveMinimum": 0}, "why": {"type": "string"}},
}
_GATE = {
    "type": "object", "additionalProperties": False, "required": ["why"], "minProperties": 2,
    "properties": {"baseline_max": {"type": "number"}, "baseline_min": {"type": "number"},
                   "bottleneck": {"type": "object", "additionalProperties": False, "required": ["inputs", "latent", "min_ratio"],
                                  "properties": {"inputs": {"type": "integer", "minimum": 1},
                                                 "latent": {"type": "integer", "minimum": 1},
                                                 "min_ratio": {"type": "number", "exclusiveMinimum": 0}}},
                   "why": {"type": "string", "minLength": 1}},
}
CLAIMS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "optirep claims",
    "type": "object", "additionalProperties": False, "required": ["version", "claims"],
    "properties": {
        "version": {"const": 1},
        "design": {"type": "object", "additionalProperties": False, "properties": {
            "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
            "power": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "seed_budget": {"type": "integer", "minimum": 2}}},
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
                "claimed": _CLAIMED,
                "sesoi": _SESOI,
                "replication": _PARTIAL,
                "attribution": _PARTIAL,
                "lr_control": _PARTIAL,
                "interaction": {"type": "object", "additionalProperties": False, "required": ["task", "why"],
                                "properties": {"task": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                                               "why": {"type": "string", "minLength": 1}}},
                "gates": {"type": "array", "items": _GATE},
                "deterministic": {"type": "boolean"},
            },
        }},
    },
}
#: Claim keys that only make sense with a `test` block.
_MEASURED_ONLY = ("claimed", "sesoi", "replication", "attribution", "lr_control", "interaction", "gates", "deterministic")


#: Fields of the headline (question b) comparison copied to the top of a claim's record.
FLAT_KEYS = ("experiment", "task", "baseline_task", "method", "baseline", "mean_method", "mean_baseline",
             "std_method", "std_baseline", "n_method", "n_baseline", "n_method_failed", "n_baseline_failed",
             "estimate", "ci_low", "ci_high", "p_primary", "p_holm", "sesoi", "claimed_effect", "effect_scale",
             "test", "ratio", "paired_wins", "power", "provenance", "task_metric")


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
            for ref in c.get("derived_from", []):
                if ref not in ids:
                    problems.append(f"  claim {c['id']}: derived_from names unknown claim {ref!r}")
                elif ref == c["id"]:
                    problems.append(f"  claim {c['id']}: derived_from names itself")
            problems += _label_problems(c)
            if "test" not in c and "full_scale" not in c:
                for k in _MEASURED_ONLY:
                    if k in c:
                        problems.append(f"  claim {c['id']} ({k}): only a claim with a `test` or `full_scale` block "
                                        f"can have `{k}`")
                continue
            cl = c.get("claimed") or {}
            sv = c.get("seed_value") or {}
            has_pair = ("seed_baseline" in cl or "baseline" in sv) and ("seed_method" in cl or "method" in sv)
            if cl and "effect" not in cl and not has_pair:
                problems.append(f"  claim {c['id']} (claimed): needs `claimed.effect` or both seed numbers "
                                "(seed_value.baseline/method or claimed.seed_baseline/seed_method)")
            if (c.get("sesoi") or {}).get("fraction") and not cl:
                problems.append(f"  claim {c['id']} (sesoi.fraction): a fraction of the claimed effect needs `claimed`")
            if c["direction"] in ("equal", "not_worse") and c.get("interaction"):
                problems.append(f"  claim {c['id']} (interaction): only for direction higher or lower")
            if c.get("deterministic") and c.get("interaction"):
                problems.append(f"  claim {c['id']} (deterministic): cannot be an interaction")
    if problems:
        raise ClaimsError(f"{source}: invalid claims file:\n" + "\n".join(problems))
    return doc


def _label_problems(c: dict) -> list[str]:
    """Each comparison's method / baseline must be a label or a variant `label[key=value,...]`
    (config.parse_variant), and a variant only where the comparison reads the timing stage's record
    (`source: timing`, given or inherited from `test`): the aggregates hold plain labels only."""
    blocks = [(k, c[k]) for k in ("test", "full_scale") if c.get(k)]
    blocks += [(k, _spec(c["test"], c[k]) if c.get("test") else c[k]) for k in ("replication", "attribution", "lr_control")
               if c.get(k)]
    out = []
    for key, block in blocks:
        for role in ("method", "baseline"):
            where = f"claim {c['id']} ({key}.{role})"
            try:
                _, hp = parse_variant(block.get(role), where)
            except ConfigError as exc:
                out.append(f"  {exc}")
                continue
            if hp and block.get("source", "aggregate") != "timing":
                out.append(f"  {where}: the label variant {block[role]!r} exists only in a timing record; it needs "
                           f"source: timing (allowed in an aggregate comparison: the plain label)")
    return out


def load_claims(path: str | Path) -> dict:
    """Read and validate experiments/claims.yaml."""
    path = Path(path)
    if not path.exists():
        raise ClaimsError(f"claims file {path} does not exist")
    return validate_claims(yaml.safe_load(path.read_text()), str(path))


# ------------------------------------------------------------------------------------------ sources
_ONLY = "__only_experiments__"  # cache key: the experiments of this study (None: all)
_EXPDIR = "__experiments_dir__"  # cache key: where experiments/<name>.yaml are (None: not checked)


def _stale_reason(agg: dict, experiments_dir: Path | None, experiment: str, task: str) -> str | None:
    """Why an aggregate was made under another design than experiments/<experiment>.yaml now states
    (seeds, labels, budget or tuning differ), or None where they agree or the YAML is not at hand."""
    f = Path(experiments_dir) / f"{experiment}.yaml" if experiments_dir else None
    if f is None or not f.exists():
        return None
    from optirep.report.aggregate import load_experiment, task_design  # as the aggregate stage reads it

    cfg = load_experiment(f)
    if task not in (cfg.get("tasks") or {}):
        return f"task {task!r} is no longer in {f}"
    now = task_design(cfg, task)
    differ = [k for k in now if agg.get(k) != now[k]]
    if not differ:
        return None
    return (f"its {', '.join(differ)} differ from {f} ({'; '.join(f'{k}: {agg.get(k)!r} vs now {now[k]!r}' for k in differ)}); "
            "the aggregate is from an earlier design of the experiment, rerun it")


def _load_agg(results_root: Path, experiment: str, task: str, cache: dict) -> tuple[Path, dict | None]:
    path = results_root / experiment / "aggregate" / f"{task}.json"
    only = cache.get(_ONLY)
    if only is not None and experiment not in only:
        return path, None  # another study's results never leak into this one's verdicts
    if path not in cache:
        agg = read_json(path) if path.exists() else None
        if agg is not None:
            stale = _stale_reason(agg, cache.get(_EXPDIR), experiment, task)
            if stale is not None:
                agg = {"stale": stale}
        cache[path] = agg
    return path, cache[path]


def _arm_from_aggregate(results_root: Path, spec: dict, role: str, cache: dict) -> dict:
    """One arm (per-seed values + what the rules need) from results/<exp>/aggregate/<task>.json.

    Returns dict(values, seeds, failed, failure_reasons, tuned, n_trials, commit, code_path, task_info)
    or dict(missing=reason).
    """
    task = spec.get("baseline_task", spec["task"]) if role == "baseline" else spec["task"]
    path, agg = _load_agg(results_root, spec["experiment"], task, cache)
    if agg is None:
        return {"missing": f"no results yet for {spec['experiment']}/{task} (aggregate/{path.name} absent)"}
    if "stale" in agg:
        return {"missing": f"{path}: {agg['stale']}"}
    label = spec[role]
    if label not in agg["per_label"]:
        return {"missing": f"{role} label {label!r} not in {path} (labels: {', '.join(agg['per_label'])})"}
    info = agg["per_label"][label]
    if spec["metric"] not in info["values"]:
        return {"missing": f"metric {spec['metric']!r} not measured for {label!r} in {path} "
                           f"(have: {', '.join(info['values'])})"}
    values = [as_float(x) for x in info["values"][spec["metric"]]]
    reasons = run_failures(agg, label)
    tuning = info.get("tuning")
    prov = info.get("provenance") or [{"seed": s, "git_sha": info.get("git_sha"), "code_path": info.get("code_path")}
                                      for s in info["seeds"]]
    return {"values": values, "seeds": list(info["seeds"]), "failure_reasons": reasons, "per_run": "provenance" in info,
            "failed": [r is not None for r in reasons], "tuned": tuning is not None,
            "n_trials": len((tuning or {}).get("trials") or []), "hp": info.get("hp"), "provenance": prov,
            "optimizer": info.get("optimizer"), "path": str(path), "agg": agg}


#: timing-record key of each metric a `source: timing` comparison may name
TIMING_METRICS = {"time_per_step_s": "times_step_s", "time_per_opt_step_s": "times_opt_step_s"}


def _arm_from_timing(results_root: Path, spec: dict, role: str, cache: dict) -> dict:
    """One arm from the timing stage's record results/<exp>/timing/<task>.json (optirep timing).

    The labels took turns one training step at a time in one process and one commit; the "seeds" of an
    arm are the interleaved rounds (0..repeats-1), so method and baseline pair round by round (the test
    of a ratio claim then runs on the paired log ratios). Warm-up rounds are not in the record's times.
    A record with fewer repeats than it needs for a claim (20) is reported missing.
    """
    path = results_root / spec["experiment"] / "timing" / f"{spec['task']}.json"
    only = cache.get(_ONLY)
    if (only is not None and spec["experiment"] not in only) or not path.exists():
        return {"missing": f"no timing record yet for {spec['experiment']}/{spec['task']} (timing/{path.name} absent)"}
    if path not in cache:
        cache[path] = read_json(path)
    rec = cache[path]
    key = TIMING_METRICS.get(spec["metric"])
    if key is None:
        return {"missing": f"metric {spec['metric']!r} is not in a timing record (allowed: {', '.join(TIMING_METRICS)})"}
    label = spec[role]
    key_of = _timing_key(rec, label)
    if key_of is None:
        return {"missing": f"{role} label {label!r} not in {path} (labels: {', '.join(rec['per_label'])})"}
    if not rec.get("enough_for_claim", False):
        return {"missing": f"{path}: {rec.get('repeats')} timed repeats, fewer than the "
                           f"{rec.get('min_repeats_for_claim')} a timing claim needs"}
    info = rec["per_label"][key_of]
    values = [float(x) for x in info[key]]
    rounds = list(range(len(values)))
    prov = [{"seed": r, "git_sha": rec.get("git_sha"), "code_path": info.get("code_path")} for r in rounds]
    agg = {"scale": rec.get("scale"), "metric": spec["metric"], "higher_is_better": False, "gate_passed": True,
           "gate": None, "seeds": rounds, "per_label": {lab: {"n_diverged": 0} for lab in [*rec["per_label"], label]},
           "timing_hardware": rec.get("hardware")}
    return {"values": values, "seeds": rounds, "failure_reasons": [None] * len(values), "per_run": True,
            "failed": [False] * len(values), "tuned": False, "n_trials": 0, "hp": info.get("hp"),
            "provenance": prov, "optimizer": info.get("optimizer"), "path": str(path), "agg": agg}


def _arm_id(entry: str, info: dict | None = None) -> tuple | None:
    """(label, overrides) of a timing arm: from the record's own fields where it has them, else parsed."""
    if info and "label" in info:
        return info["label"], info.get("overrides") or {}
    try:
        return parse_variant(entry)
    except ConfigError:
        return None


def _timing_key(rec: dict, label: str) -> str | None:
    """The record's `per_label` key of a claim's label or variant (`adamw[fused=true]`): the same string, or
    the entry with the same label and overrides however it was spelt (`adamw[ fused = true ]`)."""
    if label in rec["per_label"]:
        return label
    want = _arm_id(label)
    hits = [k for k, info in rec["per_label"].items() if want is not None and _arm_id(k, info) == want]
    return hits[0] if hits else None


#: Record sources a comparison can read (`source:` in claims.yaml); each maps (results root, spec, role,
#: cache) to one arm.
SOURCES: dict[str, Callable[[Path, dict, str, dict], dict]] = {"aggregate": _arm_from_aggregate,
                                                                 "timing": _arm_from_timing}


# ------------------------------------------------------------------------------------------ effects
def _sign(claim: dict, hib: bool) -> float:
    d = claim["direction"]
    if d in ("higher", "lower"):
        return 1.0 if d == "higher" else -1.0
    return 1.0 if hib else -1.0


def _metric_hib(metric: str, agg: dict) -> bool | None:
    """Whether larger is better for a record key: the task's direction for its quality metric, lower for
    costs, losses and perplexities, None for metrics without a better direction (spectral ones)."""
    if metric in QUALITY_KEYS:
        return bool(agg.get("higher_is_better", True))
    low = metric.lower()
    if low.startswith(COST_PREFIXES) or "loss" in low or "ppl" in low or "perplexity" in low or "mse" in low:
        return False
    if "acc" in low or "miou" in low:
        return True
    return None


def _is_ratio(claim: dict) -> bool:
    return (claim.get("claimed") or {}).get("carry") == "ratio"


def _seed_pair(claim: dict) -> tuple[float, float] | None:
    cl, sv = claim.get("claimed") or {}, claim.get("seed_value") or {}
    b, m = cl.get("seed_baseline", sv.get("baseline")), cl.get("seed_method", sv.get("method"))
    return (float(b), float(m)) if b is not None and m is not None else None


def claimed_effect(claim: dict, baseline_mean: float) -> tuple[float, str]:
    """The seed's effect carried over into our test units (oriented: > 0), and the rule in words.

    error_reduction: (err_b - err_m) / err_b of the seed (accuracies in %, err = 100 - acc) times our
    baseline error (1 - mean); relative: (m - b) / b times our |baseline mean|; ratio: log(m / b) (the
    test runs on log values); absolute: m - b. `claimed.effect` replaces the seed's quantity (the
    relative change, the error reduction, the ratio or the difference). NaN when the claim has no number.
    """
    cl = claim.get("claimed")
    if not cl:
        return math.nan, "no number claimed"
    carry, pair = cl["carry"], _seed_pair(claim)
    if carry == "error_reduction":
        q = cl.get("effect")
        if q is None:
            b, m = pair
            q = ((100 - b) - (100 - m)) / (100 - b)
        err = 1.0 - baseline_mean
        return abs(q) * err, f"the seed's relative error reduction {q:+.3g} x our baseline error {err:.4g}"
    if carry == "relative":
        q = cl.get("effect")
        if q is None:
            b, m = pair
            q = (m - b) / b
        return abs(q) * abs(baseline_mean), f"the seed's relative change {q:+.3g} x our baseline mean {baseline_mean:.4g}"
    if carry == "ratio":
        q = cl.get("effect")
        if q is None:
            b, m = pair
            q = m / b
        return abs(math.log(q)), f"the seed's ratio {q:.3g}x, tested as a log ratio"
    q = cl.get("effect")
    if q is None:
        b, m = pair
        q = m - b
    return abs(q), f"the seed's difference {q:+.3g} in our units"


def sesoi_for(claim: dict, claimed: float, baseline_mean: float) -> tuple[float, str]:
    """The smallest effect of interest in test units (> 0) and how it was set (rule 1)."""
    spec = claim.get("sesoi") or {}
    scale = abs(baseline_mean) if math.isfinite(baseline_mean) else math.nan
    if "absolute" in spec:
        return float(spec["absolute"]), "sesoi.absolute"
    if "relative" in spec:
        if _is_ratio(claim):
            return math.log1p(spec["relative"]), f"sesoi: a {spec['relative']:g} relative change (log scale)"
        return spec["relative"] * scale, f"sesoi: {spec['relative']:g} x |baseline mean|"
    if "fraction" in spec:
        return spec["fraction"] * claimed, f"sesoi: {spec['fraction']:g} x the claimed effect"
    margin = (claim.get("test") or {}).get("margin")
    if margin and "absolute" in margin:
        return float(margin["absolute"]), "test.margin.absolute"
    if margin and "relative" in margin:
        return margin["relative"] * scale, f"test.margin: {margin['relative']:g} x |baseline mean|"
    if math.isfinite(claimed):
        return DEFAULT_FRACTION * claimed, f"half the claimed effect (default)"
    if _is_ratio(claim):
        return math.log1p(DEFAULT_RELATIVE_SESOI), "no number claimed: a 1% change (default)"
    return DEFAULT_RELATIVE_SESOI * scale, "no number claimed: 1% of |baseline mean| (default)"


def metric_resolution(values: list[float], max_n: int = 20000) -> float:
    """The quantum of an accuracy metric, 1 / n_test, inferred as the smallest n that makes every
    per-seed value a multiple of 1/n (NaN when none up to max_n: a metric that is not a count ratio)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan
    n = np.arange(1, max_n + 1, dtype=float)
    prod = v[:, None] * n[None, :]
    ok = np.all(np.abs(prod - np.round(prod)) < 1e-6 * np.maximum(1.0, prod), axis=0)
    return float(1.0 / n[np.argmax(ok)]) if ok.any() else math.nan


def _provenance(m: dict, b: dict) -> dict:
    def commits(arm):
        return sorted({str(p.get("git_sha")) for p in arm["provenance"] if p.get("git_sha")})

    def paths(arm):
        return sorted({str(p.get("code_path")) for p in arm["provenance"] if p.get("code_path")})

    cm, cb = commits(m), commits(b)
    clean = {c.removesuffix("-dirty") for c in cm + cb}
    flags = []
    if len(clean) > 1:
        flags.append(f"runs from {len(clean)} different commits ({', '.join(sorted(c[:7] for c in clean))})")
    if any(c.endswith("-dirty") for c in cm + cb):
        flags.append("some runs from uncommitted code (-dirty)")
    pm, pb = paths(m), paths(b)
    # Two optimizers run on their own paths by design (V6 compiled vs torch's AdamW); what a reader must
    # see is one arm whose runs took different paths, or one optimizer on two paths in the two arms.
    mixed = [f"{'/'.join(a)}" for a in (pm, pb) if len(a) > 1]
    if mixed:
        flags.append(f"an arm's runs took different code paths ({'; '.join(mixed)})")
    elif pm and pb and pm != pb and m.get("optimizer") == b.get("optimizer"):
        flags.append(f"one optimizer on different code paths ({'/'.join(pm)} vs {'/'.join(pb)})")
    per_run = m.get("per_run") and b.get("per_run")
    return {"method_commits": cm, "baseline_commits": cb, "method_code_paths": pm or ["not recorded"],
            "baseline_code_paths": pb or ["not recorded"], "flags": flags,
            "note": None if per_run else "commit of each arm's first run only (the aggregate keeps one per label)"}


def _tuning_note(m: dict, b: dict) -> tuple[str, bool]:
    if m["tuned"] and b["tuned"]:
        eq = m["n_trials"] == b["n_trials"]
        return (f"both tuned ({m['n_trials']} / {b['n_trials']} trials)", eq)
    if not m["tuned"] and not b["tuned"]:
        return "neither tuned (fixed settings)", True
    return (f"unequal tuning: {'method' if m['tuned'] else 'baseline'} tuned "
            f"({max(m['n_trials'], b['n_trials'])} trials), the other at fixed settings", False)


def _test_values(arm: dict, claim: dict, sign: float) -> np.ndarray:
    v = np.asarray(arm["values"], dtype=float)
    if _is_ratio(claim) or claim.get("deterministic"):
        v = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
    return sign * v


def measure(claim: dict, spec: dict, results_root: Path, cache: dict, alpha: float = ALPHA) -> dict[str, Any]:
    """One comparison of a claim (`spec` = a full test block), tested but not yet decided.

    Returns the comparison record: labels, per-arm n / mean / SD / failures, the test and its oriented
    effect, interval and one-sided p values (`p_primary` = the p value the claim's decision uses), the
    seed wins, the tuning and provenance notes; or a record with verdict "not run" / "baseline failed".
    """
    src = SOURCES[spec.get("source", "aggregate")]
    rec: dict[str, Any] = {k: spec.get(k) for k in ("experiment", "task", "method", "baseline", "metric")}
    rec["baseline_task"] = spec.get("baseline_task", spec["task"])
    m, b = src(results_root, spec, "method", cache), src(results_root, spec, "baseline", cache)
    for arm in (m, b):
        if "missing" in arm:
            return {**rec, "verdict": "not run", "why": arm["missing"]}
    agg, bagg = m["agg"], b["agg"]
    hib = _metric_hib(spec["metric"], agg)
    sign = _sign(claim, True if hib is None else hib)
    cost = spec["metric"].startswith(COST_PREFIXES)
    fm = [False] * len(m["values"]) if cost else m["failed"]
    fb = [False] * len(b["values"]) if cost else b["failed"]
    am, ab = _test_values(m, claim, sign), _test_values(b, claim, sign)
    paired = m["seeds"] == b["seeds"]
    fa, fbase = np.asarray(m["values"], float), np.asarray(b["values"], float)
    mean_b = float(np.nanmean(fbase)) if np.isfinite(fbase).any() else math.nan
    mean_m = float(np.nanmean(fa)) if np.isfinite(fa).any() else math.nan
    tun, equal_tuning = _tuning_note(m, b)
    win_hib = hib if hib is not None else claim["direction"] != "lower"
    rec.update(
        scale=agg.get("scale"), task_metric=agg.get("metric"), higher_is_better=hib, sign=sign,
        n_method=len(m["values"]), n_baseline=len(b["values"]),
        n_method_failed=int(sum(fm)), n_baseline_failed=int(sum(fb)),
        method_failures=[r for r in m["failure_reasons"] if r] if not cost else [],
        baseline_failures=[r for r in b["failure_reasons"] if r] if not cost else [],
        n_method_diverged=agg["per_label"][spec["method"]].get("n_diverged", 0),
        n_baseline_diverged=bagg["per_label"][spec["baseline"]].get("n_diverged", 0),
        mean_method=mean_m, mean_baseline=mean_b,
        std_method=float(np.nanstd(fa, ddof=1)) if np.isfinite(fa).sum() > 1 else math.nan,
        std_baseline=float(np.nanstd(fbase, ddof=1)) if np.isfinite(fbase).sum() > 1 else math.nan,
        ratio=mean_m / mean_b if mean_b else math.nan,
        paired_wins=S.paired_wins(dict(zip(m["seeds"], m["values"])), dict(zip(b["seeds"], b["values"])), win_hib),
        wins_orientation=("the metric's better direction" if hib is not None else "the claimed direction"),
        tuning=tun, equal_tuning=equal_tuning, provenance=_provenance(m, b),
        planned_n=len(agg.get("seeds") or m["seeds"]),
        # a failed run has the worst quality: the lowest oriented value unless the claim says "worse"
        failed_low=(sign > 0) == bool(agg.get("higher_is_better", True)) if spec["metric"] in QUALITY_KEYS else True, _arms=(am, ab, fm, fb, paired, m, b),
        resolution=(metric_resolution(m["values"] + b["values"])
                    if spec["metric"] in QUALITY_KEYS and agg.get("metric") in ("accuracy", "pixel_accuracy") else math.nan),
    )
    gates = [a_["gate"].get("reason") for a_ in {id(agg): agg, id(bagg): bagg}.values() if not a_.get("gate_passed", False)]
    if gates:
        rec.update(verdict="baseline failed", why="baseline gate failed: " + "; ".join(map(str, gates)))
    return rec


def _run_test(rec: dict, claim: dict, alpha: float) -> None:
    """Run the test on a measured comparison (in place): effect, interval, p values."""
    am, ab, fm, fb, paired, m, b = rec.pop("_arms")
    res = S.effect_test(am, ab, paired=paired, failed_method=fm, failed_baseline=fb, alpha=alpha,
                        failed_low=rec["failed_low"])
    _store_test(rec, res, claim)


def _store_test(rec: dict, res: dict, claim: dict) -> None:
    d = claim["direction"]
    sesoi = rec["sesoi"]
    if d == "equal":
        p_lo = S.p_shifted(res, -sesoi, "greater")
        p_hi = S.p_shifted(res, sesoi, "less")
        rec["p_primary"], rec["p_kind"] = max(p_lo, p_hi), "TOST (max of the two one-sided p values)"
    elif d == "not_worse":
        rec["p_primary"], rec["p_kind"] = S.p_shifted(res, -sesoi, "greater"), "non-inferiority (H0: effect <= -SESOI)"
    else:
        rec["p_primary"], rec["p_kind"] = res.get("p_greater", math.nan), "superiority (H0: effect <= 0)"
    rec.update(S.public(res))
    rec["ci_low"], rec["ci_high"] = res["ci_low"], res["ci_high"]


def decide(direction: str, estimate: float, ci: tuple[float, float], p_adj: float, sesoi: float,
           claimed: float = math.nan, alpha: float = ALPHA,
           u: Callable[[float], str] = lambda x: f"{x:.3g}") -> tuple[str, str]:
    """The verdict of one comparison from its oriented effect (rule 3) and a one-line reason.

    Args: `estimate` and `ci` = (lo, hi), the one-sided (1 - alpha) bounds, oriented so the claim says
    effect > 0 (for `equal` / `not_worse`: so that > 0 is better); `p_adj` the (Holm-adjusted where
    primary) p value of the claim's test; `sesoi` > 0 and `claimed` (NaN without a number), test units;
    `u` formats a test-unit quantity for the reason (e.g. in pp).
    """
    lo, hi = ci
    if not (math.isfinite(estimate) and math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive", "too few runs for a test"
    sig = math.isfinite(p_adj) and p_adj < alpha
    if direction in ("higher", "lower"):
        has_claim = math.isfinite(claimed)
        contains = has_claim and lo <= claimed <= hi
        if sig and (estimate >= sesoi or contains):
            why = f"significant (p={p_adj:.3g}) and "
            why += f"effect {u(estimate)} >= SESOI {u(sesoi)}" if estimate >= sesoi else f"interval contains the claimed {u(claimed)}"
            if has_claim and lo > claimed:
                why += f"; larger than claimed (lower bound {u(lo)} > claimed {u(claimed)})"
            elif has_claim and hi < claimed:
                why += f"; smaller than claimed (upper bound {u(hi)} < claimed {u(claimed)})"
            return "replicated", why
        if hi < sesoi:
            if hi < 0:
                return "not replicated", f"significant in the opposite direction (upper bound {u(hi)} < 0)"
            if lo > 0:
                return "not replicated", (f"a real but far smaller effect: upper bound {u(hi)} < SESOI {u(sesoi)}"
                                          + (f" (claimed {u(claimed)})" if has_claim else ""))
            return "not replicated", f"an effect of interest is excluded (upper bound {u(hi)} < SESOI {u(sesoi)})"
        if sig:
            return "inconclusive", f"significant (p={p_adj:.3g}) but effect {u(estimate)} < SESOI {u(sesoi)} and the SESOI is not excluded"
        return "inconclusive", f"not significant (p={p_adj:.3g}) and an effect of {u(sesoi)} is not excluded (upper bound {u(hi)})"
    if direction == "equal":
        if sig:
            return "replicated", f"equivalent within ±{u(sesoi)} (TOST p={p_adj:.3g}, interval [{u(lo)}, {u(hi)}])"
        if lo > sesoi or hi < -sesoi:
            return "not replicated", f"interval [{u(lo)}, {u(hi)}] wholly outside ±{u(sesoi)}"
        return "inconclusive", f"interval [{u(lo)}, {u(hi)}] neither inside nor outside ±{u(sesoi)} (TOST p={p_adj:.3g})"
    if direction == "not_worse":
        if sig:
            return "replicated", f"worse by less than {u(sesoi)} (non-inferiority p={p_adj:.3g}, lower bound {u(lo)})"
        if hi < -sesoi:
            return "not replicated", f"worse by more than {u(sesoi)} (upper bound {u(hi)})"
        return "inconclusive", f"interval [{u(lo)}, {u(hi)}] straddles -{u(sesoi)} (p={p_adj:.3g})"
    raise ClaimsError(f"direction {direction!r}: allowed values higher, lower, equal, not_worse")


# ------------------------------------------------------------------------------------------ claims
def _base_record(claim: dict) -> dict[str, Any]:
    keys = ("id", "optimizer", "statement", "seed_value", "metric", "direction", "setup", "source", "gpu_estimate")
    return {k: claim.get(k) for k in keys}


def _yaml(experiments_dir: Path | None, name: str) -> dict | None:
    """experiments/<name>.yaml as a dict, or None if there is no such file."""
    f = Path(experiments_dir) / f"{name}.yaml" if experiments_dir else None
    return (yaml.safe_load(f.read_text()) or {}) if f is not None and f.exists() else None


def _gpu_estimate(experiments_dir: Path | None, experiment: str) -> str | None:
    """`gpu_estimate` of experiments/<experiment>.yaml, if that file exists and sets it."""
    est = (_yaml(experiments_dir, experiment) or {}).get("gpu_estimate")
    return " ".join(str(est).split()) if est else None


def _spec(test: dict, over: dict | None) -> dict:
    """A full test block: `over` (a partial comparison) on top of `test`."""
    spec = {k: v for k, v in test.items() if k not in ("margin", "proxy")}
    if over:
        if "task" in over and "baseline_task" not in over:
            spec.pop("baseline_task", None)
        spec.update({k: v for k, v in over.items() if k != "note"})
    return spec


def _interaction(claim: dict, rec: dict, other: dict, alpha: float) -> None:
    """Replace `rec`'s test by the difference of differences rec - other (rule 7), in place."""
    am, ab, fm, fb, paired, *_ = rec.pop("_arms")
    om, ob, ofm, ofb, opaired, *_ = other.pop("_arms")

    def diffs(a, b, fa, fb):
        d = a - b
        # a pair with a failed run has no difference; it enters at the worst rank (the smallest gain)
        return np.where(np.asarray(fa) | np.asarray(fb), np.nan, d)

    res = S.difference_of_differences(diffs(am, ab, fm, fb), diffs(om, ob, ofm, ofb), alpha=alpha)
    rec["interaction_with"] = {k: other.get(k) for k in ("task", "mean_method", "mean_baseline", "n_method_failed",
                                                          "n_baseline_failed")}
    rec["main_effect"] = float(np.nanmean(am - ab)) if np.isfinite(am - ab).any() else math.nan
    rec["other_effect"] = float(np.nanmean(om - ob)) if np.isfinite(om - ob).any() else math.nan
    _store_test(rec, res, claim)


def _question(claim: dict, over: dict | None, results_root: Path, cache: dict, alpha: float,
              role: str) -> dict:
    """Measure and test one question's comparison (plus its interaction partner); no verdict yet."""
    spec = _spec(claim["test"], over)
    rec = measure(claim, spec, results_root, cache, alpha)
    rec["role"] = role
    if over and over.get("note"):
        rec["note"] = over["note"]
    if "verdict" in rec:
        rec.pop("_arms", None)
        return rec
    claimed, carry = claimed_effect(claim, rec["mean_baseline"])
    sesoi, sesoi_rule = sesoi_for(claim, claimed, rec["mean_baseline"])
    rec.update(claimed_effect=claimed, carry_over=carry, sesoi=sesoi, sesoi_rule=sesoi_rule,
               effect_scale="log ratio" if (_is_ratio(claim) or claim.get("deterministic")) else "difference")
    if claim.get("interaction"):
        ospec = {**spec, "task": claim["interaction"]["task"]}
        ospec.pop("baseline_task", None)
        other = measure(claim, ospec, results_root, cache, alpha)
        if "verdict" in other:
            rec.pop("_arms", None)
            return {**rec, "verdict": other["verdict"], "why": f"interaction partner: {other['why']}"}
        _interaction(claim, rec, other, alpha)
        rec["interaction_why"] = claim["interaction"]["why"]
    elif claim.get("deterministic"):
        am, ab, *_ = rec.pop("_arms")
        if np.ptp(am) == 0 and np.ptp(ab) == 0 and np.isfinite(am).all() and np.isfinite(ab).all():
            rec.update(test="exact ratio (deterministic)", estimate=float(am[0] - ab[0]), ci_low=float(am[0] - ab[0]),
                       ci_high=float(am[0] - ab[0]), p_primary=math.nan, p_kind="not tested (exact)")
        else:
            rec.update(verdict="inconclusive", why="declared deterministic but the per-seed values vary")
    else:
        _run_test(rec, claim, alpha)
    if rec.get("verdict") is None:
        _gates(claim, rec)
    return rec


def _gates(claim: dict, rec: dict) -> None:
    """Proxy-validity gates (rule 9): the declared ones and the automatic test-resolution gate."""
    checks = []
    for g in claim.get("gates") or []:
        if "baseline_max" in g:
            ok = rec["mean_baseline"] <= g["baseline_max"]
            checks.append({"gate": f"baseline mean <= {g['baseline_max']:g}", "value": rec["mean_baseline"], "passed": ok,
                           "why": g["why"]})
        if "baseline_min" in g:
            ok = rec["mean_baseline"] >= g["baseline_min"]
            checks.append({"gate": f"baseline mean >= {g['baseline_min']:g}", "value": rec["mean_baseline"], "passed": ok,
                           "why": g["why"]})
        if "bottleneck" in g:
            bn = g["bottleneck"]
            ratio = bn["inputs"] / bn["latent"]
            checks.append({"gate": f"compression {bn['inputs']}/{bn['latent']} >= {bn['min_ratio']:g}x", "value": ratio,
                           "passed": ratio >= bn["min_ratio"], "why": g["why"]})
    q = as_float(rec.get("resolution"))
    if math.isfinite(q) and not _is_ratio(claim):
        checks.append({"gate": "one test example finer than the SESOI", "value": q, "passed": q < rec["sesoi"],
                       "why": f"one test example = {unit_formatter(rec)(q)} (1/{round(1 / q)}) against SESOI "
                              f"{unit_formatter(rec)(rec['sesoi'])}"})
    rec["gates"] = checks
    failed = [c for c in checks if not c["passed"]]
    if failed:
        rec["proxy_invalid"] = "; ".join(f"{c['gate']} failed (value {c['value']:.4g}): {c['why']}" for c in failed)


def _power(rec: dict, alpha: float, power: float, budget: int) -> None:
    """Rule 8: minimum detectable effect at the planned n and the n needed for the SESOI (in place)."""
    sd = as_float(rec.get("sd_diff"))
    pa = S.power_analysis(sd, rec["planned_n"], rec["sesoi"], alpha, power)
    pa["min_attainable_p"] = S.min_attainable_p(rec["planned_n"], rec.get("test", ""))
    pa["seed_budget"] = budget
    u = unit_formatter(rec)
    why = []
    if pa["n_needed"] is None and math.isfinite(sd) and sd > 0:
        why.append(f"more than 100000 seeds per arm needed for SESOI {u(rec['sesoi'])} at per-seed SD {u(sd)}")
    elif pa["n_needed"] is not None and pa["n_needed"] > budget:
        why.append(f"{pa['n_needed']} seeds per arm needed for SESOI {u(rec['sesoi'])} at per-seed SD {u(sd)} "
                   f"(budget {budget}; MDE at n={rec['planned_n']}: {u(pa['mde'])})")
    if pa["min_attainable_p"] >= alpha:
        why.append(f"the exact rank test cannot reach p < {alpha:g} with n={rec['planned_n']} "
                   f"(smallest p {pa['min_attainable_p']:.3g})")
    pa["untestable"] = "; ".join(why) or None
    rec["power"] = pa


def unit_formatter(rec: dict) -> Callable[[float], str]:
    """How a test-unit quantity of this comparison reads in a reason: pp for accuracies, "log ratio"
    for ratio claims (oriented: > 0 is the claimed direction), the metric's own units otherwise."""
    if rec.get("effect_scale") == "log ratio":
        return lambda x: f"{x:.3g} (log ratio)"
    if rec.get("metric") in QUALITY_KEYS and rec.get("task_metric") in ("accuracy", "pixel_accuracy", "miou"):
        return lambda x: f"{100 * x:.3g} pp"
    return lambda x: f"{x:.3g}"


def _finish(claim: dict, rec: dict, p_adj: float, alpha: float) -> None:
    """Verdict of one tested comparison (rules 3, 8, 9, 10, direction-only), in place."""
    if rec.get("verdict"):
        return
    if rec.get("proxy_invalid"):
        rec["verdict"], rec["why"] = "not tested (proxy invalid)", rec["proxy_invalid"]
        return
    rec["p_adjusted"] = p_adj
    est, lo, hi = rec["estimate"], rec["ci_low"], rec["ci_high"]
    if claim.get("deterministic"):
        ok = est >= rec["sesoi"]
        rec["verdict"] = "replicated" if ok else "not replicated"
        rec["why"] = (f"exact ratio {math.exp(rec['sign'] * est):.4g}x (log {est:.3g}) "
                      f"{'>=' if ok else '<'} SESOI {rec['sesoi']:.3g}; claimed {math.exp(rec['claimed_effect']):.3g}x")
        return
    v, why = decide(claim["direction"], est, (lo, hi), p_adj, rec["sesoi"], rec["claimed_effect"], alpha,
                    u=unit_formatter(rec))
    if v == "inconclusive" and (rec.get("power") or {}).get("untestable"):
        v, why = "untestable at this scale", rec["power"]["untestable"] + f" ({why})"
    if v == "replicated" and not math.isfinite(rec["claimed_effect"]) and claim["direction"] in ("higher", "lower"):
        v = "replicated (direction only)"
    rec["verdict"], rec["why"] = v, why


def _combine(primary: dict, control: dict | None) -> tuple[str, str]:
    """Question (b): the tuned comparison and the LR-matched control as an intersection-union test."""
    if control is None or control.get("verdict") in ("not run", None):
        return primary["verdict"], primary.get("why", "")
    pv, cv = primary["verdict"], control["verdict"]
    if pv in ("not run", "baseline failed", "not tested (proxy invalid)"):
        return pv, primary.get("why", "")
    if "not replicated" in (pv, cv):
        which = "equal tuning" if pv == "not replicated" else "the LR-matched control"
        return "not replicated", f"not replicated under {which}: " + (primary if pv == "not replicated" else control)["why"]
    if pv.startswith("replicated") and cv.startswith("replicated"):
        return pv, primary["why"] + "; the LR-matched control agrees"
    if pv.startswith("replicated"):
        return "inconclusive", f"replicated under equal tuning, but the LR-matched control is {cv} ({control['why']})"
    return pv, primary["why"] + f"; LR-matched control: {cv}"


def evaluate(doc: dict, results_root: str | Path, alpha: float | None = None,
             experiments_dir: str | Path | None = None, only: list[str] | None = None,
             planned_n: int | None = None) -> dict[str, Any]:
    """Verdicts for every claim of a validated claims document (rules in the module docstring).

    `planned_n` overrides each comparison's planned seeds in the power analysis (`optirep power`).
    """
    design = doc.get("design") or {}
    alpha = alpha if alpha is not None else design.get("alpha", ALPHA)
    power, budget = design.get("power", POWER), design.get("seed_budget", SEED_BUDGET)
    results_root = Path(results_root)
    experiments_dir = Path(experiments_dir) if experiments_dir else None
    cache: dict = {_ONLY: set(only) if only is not None else None, _EXPDIR: experiments_dir}
    records: dict[str, dict] = {}
    full: dict[str, dict] = {}
    for claim in doc["claims"]:
        base = _base_record(claim)
        if "not_run" in claim:
            records[claim["id"]] = {**base, "verdict": "not run", "why": claim["not_run"], "scale": None}
        elif "test" in claim:
            t = claim["test"]
            q = {"attribution": _question(claim, claim.get("attribution"), results_root, cache, alpha, "equal tuning")}
            if claim.get("replication"):
                q["replication"] = _question(claim, claim["replication"], results_root, cache, alpha, "seed settings")
            if claim.get("lr_control"):
                q["lr_control"] = _question(claim, claim["lr_control"], results_root, cache, alpha, "LR-matched control")
            # the paper prints it as the estimate *at full scale*: a claim with a full-scale experiment takes
            # that file's estimate (below), not the reduced CPU experiment's
            est = claim.get("gpu_estimate") or (
                None if "full_scale" in claim else _gpu_estimate(experiments_dir, t["experiment"]))
            records[claim["id"]] = {**base, "gpu_estimate": est, "proxy": t.get("proxy"), "questions": q,
                                    "interaction": claim.get("interaction"), "deterministic": bool(claim.get("deterministic"))}
        if "full_scale" in claim:
            fclaim = {**claim, "test": claim["full_scale"]}
            for k in ("attribution", "replication", "lr_control", "interaction"):
                fclaim.pop(k, None)
            full[claim["id"]] = {"questions": {"attribution": _question(fclaim, None, results_root, cache, alpha, "equal tuning")},
                                 "_claim": fclaim, "gpu_estimate": _gpu_estimate(experiments_dir, claim["full_scale"]["experiment"])}
            if "test" in claim:
                cost = full_scale_cost(experiments_dir, claim["full_scale"], claim["test"], results_root, cache)
                if cost is not None:
                    full[claim["id"]]["cost"] = cost

    claim_of = {c["id"]: c for c in doc["claims"]}
    for recs, lookup in ((records, lambda cid: claim_of[cid]), (full, lambda cid: full[cid]["_claim"])):
        for cid, r in recs.items():
            for qrec in (r.get("questions") or {}).values():
                if not qrec.get("verdict") and "test" in qrec and qrec["test"] != "exact ratio (deterministic)":
                    if planned_n:
                        qrec["planned_n"] = planned_n
                    _power(qrec, alpha, power, budget)
        # Rule 6: Holm across the primary tests of the study (this family), everything else per claim.
        prim = [(cid, r["questions"]["attribution"]) for cid, r in recs.items() if "questions" in r]
        tested = [(cid, q) for cid, q in prim if not q.get("verdict") and not q.get("proxy_invalid")
                  and math.isfinite(as_float(q.get("p_primary")))]
        adj = S.holm([q["p_primary"] for _, q in tested]) if tested else []
        for (cid, q), p in zip(tested, adj):
            q["p_holm"], q["family_size"] = float(p), len(tested)
        for cid, r in recs.items():
            claim = lookup(cid)
            for name, qrec in (r.get("questions") or {}).items():
                p = qrec.get("p_holm", math.nan) if name == "attribution" else as_float(qrec.get("p_primary"))
                _finish(claim, qrec, p, alpha)
            if "questions" in r:
                qs = r["questions"]
                r["verdict"], r["why"] = _combine(qs["attribution"], qs.get("lr_control"))
                r["replication_verdict"] = (qs.get("replication") or {}).get("verdict")
                r["scale"] = qs["attribution"].get("scale")
                # the headline comparison's numbers at the top level, for the tables
                r.update({k: qs["attribution"][k] for k in FLAT_KEYS if k in qs["attribution"]})
                r["test_metric"] = qs["attribution"].get("metric")
    for cid, rec in full.items():
        rec.pop("_claim", None)
        records[cid]["full_scale"] = {**rec["questions"]["attribution"], "verdict": rec["verdict"], "why": rec["why"],
                                      "gpu_estimate": rec.get("gpu_estimate") or rec["questions"]["attribution"].get("gpu_estimate"),
                                      **({"cost": rec["cost"]} if "cost" in rec else {})}
        if records[cid]["verdict"] == "not run" and rec["verdict"] == "not run":
            records[cid]["gpu_estimate"] = records[cid].get("gpu_estimate") or rec.get("gpu_estimate")

    for claim in doc["claims"]:
        if "derived_from" in claim:
            parts = {ref: records[ref]["verdict"] for ref in claim["derived_from"] if ref in records}
            vs = {("replicated" if v.startswith("replicated") else v) for v in parts.values()}
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
    rcounts = Counter(r.get("replication_verdict") for r in ordered if r.get("replication_verdict"))
    n_primary = sum(1 for r in ordered if "p_holm" in ((r.get("questions") or {}).get("attribution") or {}))
    return {"alpha": alpha, "power": power, "seed_budget": budget, "holm_family_size": n_primary,
            "rules": __doc__.split("Verdict rules", 1)[1].strip(),
            "counts": {v: counts.get(v, 0) for v in VERDICTS},
            "replication_counts": {v: rcounts.get(v, 0) for v in VERDICTS},
            "n_claims": len(ordered), "claims": ordered}


#: Official training-set sizes (before this project's validation split), for the steps per epoch of a
#: full-scale task that is given in epochs.
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "mnist": 60000, "fashion_mnist": 60000,
               "imdb": 25000, "ag_news": 120000, "voc2012": 1464}


def full_scale_cost(experiments_dir: Path | None, full: dict, reduced: dict, results_root: Path,
                    cache: dict) -> dict[str, Any] | None:
    """Runs, steps and CPU time of a claim's full-scale task, extrapolated from step times measured here.

    steps per run = `steps`, or `epochs` x ceil(n_train / batch) with n_train the official training set
    minus the task's validation split (times `train_fraction`); runs = every label's seeds plus, for
    each tuned label, the tuning budget (`tuning.budget` runs, an upper bound). The rate is the mean
    measured seconds per training example over the labels of the reduced test's task (its `time_per_step_s` / its batch size): the cost of the same
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
    # the tuning protocol's per-label run budget (`tuning.budget`, the worst case; the sweep may stop earlier)
    budget = int((fcfg.get("tuning") or {}).get("budget", 0))
    runs = sum(seeds + (budget if (fcfg["optimizers"].get(lab) or {}).get("tune") else 0)
               for lab in task["optimizers"])
    _, agg = _load_agg(results_root, reduced["experiment"], reduced["task"], cache)
    rtask = rcfg.get("tasks", {}).get(reduced["task"])
    if agg is None or "stale" in agg or rtask is None:
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
    print(f"{args.out}: " + ", ".join(f"{v} {n}" for v, n in out["counts"].items() if n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
