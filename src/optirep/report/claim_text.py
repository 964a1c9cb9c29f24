"""Plain-text pieces of a claim record (claims.json), shared by the README table and the paper.

Every function only formats numbers optirep.report.claims computed; effects are shown in the metric's
natural direction (the record stores them oriented so that the claim says "> 0").
"""

from __future__ import annotations

import math
from optirep.report._io import as_float

#: The questions of a claim in the order the tables show them, with their row names (rule 2).
QUESTIONS = (("replication", "seed settings"), ("attribution", "equal tuning"), ("lr_control", "LR-matched control"))
PERCENT_METRICS = ("accuracy", "pixel_accuracy", "miou")


def _unit(q: dict) -> tuple[float, str]:
    if q.get("metric") in ("final_test", "final_val", "best_val") and q.get("task_metric") in PERCENT_METRICS:
        return 100.0, " pp"
    return 1.0, ""


def _g(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "–"
    s = f"{x:+.3g}" if signed else f"{x:.3g}"
    return s.replace("e-0", "e-").replace("e+0", "e")


def natural(q: dict) -> dict[str, float]:
    """Effect, interval, claimed effect and SESOI of a tested comparison in natural units/direction.

    Returns dict(effect, low, high, claimed, sesoi, kind): kind "ratio" (method / baseline) or
    "difference" (method - baseline, times 100 for accuracies: pp).
    """
    s = as_float(q.get("sign")) if math.isfinite(as_float(q.get("sign"))) else 1.0
    est, lo, hi = (as_float(q.get(k)) for k in ("estimate", "ci_low", "ci_high"))
    cl, ses = as_float(q.get("claimed_effect")), as_float(q.get("sesoi"))
    if q.get("effect_scale") == "log ratio":
        ends = sorted((math.exp(s * lo), math.exp(s * hi))) if math.isfinite(lo) and math.isfinite(hi) else [math.nan] * 2
        return {"kind": "ratio", "effect": math.exp(s * est) if math.isfinite(est) else math.nan, "low": ends[0],
                "high": ends[1], "claimed": math.exp(s * cl) if math.isfinite(cl) else math.nan,
                "sesoi": math.exp(s * ses) if math.isfinite(ses) else math.nan}
    f, _ = _unit(q)
    ends = sorted((f * s * lo, f * s * hi))
    return {"kind": "difference", "effect": f * s * est, "low": ends[0], "high": ends[1],
            "claimed": f * s * cl if math.isfinite(cl) else math.nan, "sesoi": f * ses}


def effect_text(q: dict) -> str:
    """'+0.78 pp [+0.27, +1.29]' or '1.34x [1.19, 1.50]' (90% interval = the one-sided 95% bounds)."""
    if not math.isfinite(as_float(q.get("estimate"))):
        return "–"
    n = natural(q)
    pre = "DoD " if q.get("interaction_with") else ""
    if q.get("test") == "exact ratio (deterministic)":
        return f"{n['effect']:.4g}x (exact)"
    if n["kind"] == "ratio":
        return f"{pre}{n['effect']:.3g}x [{n['low']:.3g}, {n['high']:.3g}]"
    _, u = _unit(q)
    return f"{pre}{_g(n['effect'], True)}{u} [{_g(n['low'], True)}, {_g(n['high'], True)}]"


def target_text(q: dict) -> str:
    """'claimed +0.62 pp, SESOI 0.31 pp' (or 'no number; SESOI ...')."""
    if not math.isfinite(as_float(q.get("sesoi"))):
        return "–"
    n = natural(q)
    _, u = _unit(q)
    if n["kind"] == "ratio":
        c = f"claimed {n['claimed']:.3g}x" if math.isfinite(n["claimed"]) else "no number"
        return f"{c}; SESOI {n['sesoi']:.3g}x"
    c = f"claimed {_g(n['claimed'], True)}{u}" if math.isfinite(n["claimed"]) else "no number"
    return f"{c}; SESOI {'±' if q.get('p_kind', '').startswith('TOST') else ''}{_g(abs(n['sesoi']))}{u}"


def stats_text(q: dict) -> str:
    """'n=5/5, failed 0/3, paired t, p=0.016 (Holm 0.14)'."""
    if "n_method" not in q:
        return "–"
    parts = [f"n={q.get('n_method')}/{q.get('n_baseline')}",
             f"failed {q.get('n_method_failed', 0)}/{q.get('n_baseline_failed', 0)}"]
    if q.get("test"):
        parts.append(str(q["test"]))
    p, ph = as_float(q.get("p_primary")), as_float(q.get("p_holm"))
    if math.isfinite(p):
        parts.append(f"p={p:.2g}" + (f" (Holm {ph:.2g})" if math.isfinite(ph) else ""))
    return ", ".join(parts)


def verdict_text(q: dict) -> str:
    v = q.get("verdict") or "–"
    return f"{v}: {q['why']}" if v in ("not run", "baseline failed") and q.get("why") else v


def flags(q: dict) -> list[str]:
    """Warnings a reader must see next to a comparison: provenance and unequal tuning."""
    out = list(((q.get("provenance") or {}).get("flags")) or [])
    if q.get("equal_tuning") is False:
        out.append(str(q.get("tuning")))
    return out
