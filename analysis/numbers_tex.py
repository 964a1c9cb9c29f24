"""paper/generated/numbers.tex: a \\newcommand for every number the paper's text uses.

    python analysis/numbers_tex.py --results results/<exp> [results/<exp2> ...] --claims results/claims.json \
        --out paper/generated/numbers.tex

Study-wide macros (abstract, protocol): \\StudyExperiments, \\StudyTasks, \\StudySeedsMin/Max,
\\StudyTrialsMin/Max, \\StudySeedsRange, \\StudyTrialsRange, \\StudyScale,
\\StudyConfidence, \\ClaimsTotal, \\ClaimsMeasured, \\ClaimsAlpha and
one \\Claims<Verdict> (headline, question b) and \\Replication<Verdict> (question a) per verdict,
\\ClaimsHolmFamily, \\ClaimsSeedBudget, \\ClaimsPower and the rules' constants (\\ClaimsChanceMarginPp,
\\ClaimsSdRatioLimit, \\ClaimsDefaultSesoiPercent, \\ClaimsIntervalLevel, \\ClaimsOneSidedLevel). Per experiment / task / optimizer: R<Exp>Scale, R<Exp>Seeds,
R<Exp>Trials, R<Exp><Task>Target, R<Exp><Task>GatePassed, R<Exp><Task><Label>{FinalTestMean,
FinalTestStd,N,Diverged,TimePerStepMs}, R<Exp><Task><Label>{Diff,PHolm} (against the baseline).
All are always defined (as "--" when there is nothing to show), so the text compiles at any stage.
"""

import argparse
import sys

from optirep.analysis.stats import CHANCE_MARGIN, CONFIDENCE, SD_RATIO_LIMIT
from optirep.report._io import read_json, write_text
from optirep.report.aggregate import read_aggregates, tuning_budget
from optirep.report.claims import ALPHA, DEFAULT_RELATIVE_SESOI, VERDICTS
from optirep.report.latex import DISPLAY, Macros, display_for, escape, fmt, macro_name, numbers_tex


def _range(xs) -> str:
    """'3' when every task uses the same count, else '3--5'; '--' when there is none."""
    if not xs:
        return "--"
    return str(min(xs)) if min(xs) == max(xs) else f"{min(xs)}--{max(xs)}"


def build(results_dirs, claims) -> Macros:
    m = Macros()
    aggs_by_exp = {r: read_aggregates(r) for r in results_dirs}
    all_aggs = [a for aggs in aggs_by_exp.values() for a in aggs]
    seeds = [len(a["seeds"]) for a in all_aggs]
    trials = [tuning_budget(a) for a in all_aggs]  # tuning runs per tuned optimizer
    m.add("StudyExperiments", str(len(aggs_by_exp)))
    m.add("StudyTasks", str(len(all_aggs)))
    m.add("StudySeedsMin", str(min(seeds)) if seeds else "--")
    m.add("StudySeedsMax", str(max(seeds)) if seeds else "--")
    m.add("StudyTrialsMin", str(min(trials)) if trials else "--")
    m.add("StudyTrialsMax", str(max(trials)) if trials else "--")
    m.add("StudySeedsRange", _range(seeds))
    m.add("StudyTrialsRange", _range(trials))
    scales = sorted({a["scale"] for a in all_aggs if a.get("scale")})
    m.add("StudyScale", escape("; ".join(scales)) if scales else "--")
    m.add("StudyConfidence", f"{CONFIDENCE * 100:g}\\%")
    counts = (claims or {}).get("counts", {})
    m.add("ClaimsTotal", str(claims["n_claims"]) if claims else "--")
    m.add("ClaimsMeasured", str(claims["n_claims"] - counts.get("not run", 0)) if claims else "--")
    m.add("ClaimsAlpha", f"{claims['alpha']:g}" if claims else "--")
    for v in VERDICTS:
        m.add(("Claims", v), str(counts.get(v, 0)) if claims else "--")
        m.add(("Replication", v), str((claims or {}).get("replication_counts", {}).get(v, 0)) if claims else "--")
    m.add("ClaimsHolmFamily", str(claims.get("holm_family_size", "--")) if claims else "--")
    m.add("ClaimsSeedBudget", str(claims.get("seed_budget", "--")) if claims else "--")
    m.add("ClaimsPower", f"{claims.get('power', 0.8):g}" if claims else "--")
    # the fixed constants of the rules (optirep.analysis.stats / optirep.report.claims)
    alpha = claims["alpha"] if claims else ALPHA
    m.add("ClaimsChanceMarginPp", f"{100 * CHANCE_MARGIN:g}")
    m.add("ClaimsSdRatioLimit", f"{SD_RATIO_LIMIT:g}")
    m.add("ClaimsDefaultSesoiPercent", f"{100 * DEFAULT_RELATIVE_SESOI:g}")
    m.add("ClaimsIntervalLevel", f"{100 * (1 - 2 * alpha):g}")
    m.add("ClaimsOneSidedLevel", f"{100 * (1 - alpha):g}")

    for aggs in aggs_by_exp.values():
        if not aggs:
            continue
        exp = aggs[0]["experiment"]
        m.add(("R", exp, "Scale"), escape(aggs[0]["scale"]))
        m.add(("R", exp, "Seeds"), str(len(aggs[0]["seeds"])))
        m.add(("R", exp, "Trials"), str(tuning_budget(aggs[0])))
        for agg in aggs:
            task = agg["task"]
            fac, _, dec = display_for("final_test", agg["metric"])
            tfac, _, tdec = DISPLAY["time_per_step_s"]
            m.add(("R", exp, task, "Target"), fmt(agg["target"]["value"], dec, fac))
            m.add(("R", exp, task, "GatePassed"), "yes" if agg["gate_passed"] else "no")
            comps = {c["method"]: c for c in agg["comparisons"]}
            for label, info in agg["per_label"].items():
                st = info["stats"].get("final_test", {})
                m.add(("R", exp, task, label, "FinalTestMean"), fmt(st.get("mean"), dec, fac))
                m.add(("R", exp, task, label, "FinalTestStd"), fmt(st.get("std"), dec, fac))
                m.add(("R", exp, task, label, "N"), str(info["n_runs"]))
                m.add(("R", exp, task, label, "Diverged"), str(info["n_diverged"]))
                m.add(("R", exp, task, label, "TimePerStepMs"),
                      fmt(info["stats"].get("time_per_step_s", {}).get("mean"), tdec, tfac))
                if label in comps:
                    m.add(("R", exp, task, label, "Diff"), fmt(comps[label]["diff"], dec, fac))
                    m.add(("R", exp, task, label, "PHolm"), fmt(comps[label].get("p_holm"), 3))
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", nargs="*", default=[], help="results/<exp> folders")
    ap.add_argument("--claims", help="results/claims.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    claims = read_json(args.claims) if args.claims else None
    macros = build(args.results, claims)
    write_text(args.out, numbers_tex(macros, header="from " + ", ".join(args.results + [args.claims or ""])))
    print(f"{args.out}: {len(macros)} macros")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
